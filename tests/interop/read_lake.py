"""Reads an Alluvium lake with PyIceberg and writes every table as CSV rows.

Usage: read_lake.py CATALOG_NAME CATALOG_URI WAREHOUSE OUT_DIR [s3 endpoint]

CATALOG_URI is SQLAlchemy's form (sqlite:////abs/path/catalog.db). For every table of the
catalog it writes OUT_DIR/<namespace>.<table>.csv with a header and one line per row, values
formatted like the fixtures' expected/ files (so the Rust test compares them directly), and
prints the snapshot summary property alluvium.epoch of each table.
"""
import csv
import datetime
import decimal
import os
import sys

from pyiceberg.catalog.sql import SqlCatalog


def fmt(v):
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime.datetime):
        v = v.astimezone(datetime.timezone.utc)
        return v.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, datetime.date):
        return v.strftime("%Y-%m-%d")
    if isinstance(v, decimal.Decimal):
        return f"{v:.2f}"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def main():
    name, uri, warehouse, out = sys.argv[1:5]
    props = {"uri": uri, "warehouse": warehouse}
    if len(sys.argv) > 5:
        props.update({
            "s3.endpoint": sys.argv[5],
            "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3.force-virtual-addressing": "false",
        })
    catalog = SqlCatalog(name, **props)
    os.makedirs(out, exist_ok=True)
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            table = catalog.load_table(ident)
            snapshot = table.current_snapshot()
            epoch = snapshot.summary.additional_properties.get("alluvium.epoch") if snapshot else None
            data = table.scan().to_arrow()
            columns = data.column_names
            rows = data.to_pylist()
            with open(os.path.join(out, ".".join(ident) + ".csv"), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                for r in rows:
                    w.writerow([fmt(r[c]) for c in columns])
            print(".".join(ident), len(rows), epoch)


if __name__ == "__main__":
    main()
