"""Reads an Alluvium lake with PyIceberg or DuckDB and writes every table as CSV rows.

Usage: read_lake.py pyiceberg|duckdb CATALOG_NAME CATALOG_URI WAREHOUSE OUT_DIR [s3 endpoint]

CATALOG_URI is SQLAlchemy's form (sqlite:////abs/path/catalog.db), or a REST catalog's URL
(http://host:port; a bearer token from ALLUVIUM_LAKE_CATALOG_TOKEN). For every table of the
catalog it writes OUT_DIR/<namespace>.<table>.csv with a header and one line per row, values
formatted like the fixtures' expected/ files (so the Rust test compares them directly), and
prints each table's name, row count and (PyIceberg) the snapshot property alluvium.epoch.
DuckDB (iceberg extension, loaded from the duckdb-ext-iceberg wheel) reads each table's
current metadata file, found in the SQLite catalog; it is used on local lakes only.
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


def write(out, name, columns, rows):
    with open(os.path.join(out, name + ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([fmt(v) for v in r])


def duckdb_main(name, uri, out):
    import sqlite3

    import duckdb
    import duckdb_ext

    ext = os.path.join(list(duckdb_ext.__path__)[0], "extensions", "v" + duckdb.__version__, "linux_amd64")
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.load_extension(os.path.join(ext, "avro.duckdb_extension"))
    con.load_extension(os.path.join(ext, "iceberg.duckdb_extension"))
    os.makedirs(out, exist_ok=True)
    db = sqlite3.connect(uri[len("sqlite:///"):])
    tables = db.execute(
        "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables WHERE catalog_name = ?",
        (name,),
    ).fetchall()
    for ns, table, location in tables:
        result = con.execute(f"SELECT * FROM iceberg_scan('{location}')")
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
        write(out, f"{ns}.{table}", columns, rows)
        print(f"{ns}.{table}", len(rows), "duckdb")


def main():
    engine = sys.argv[1]
    name, uri, warehouse, out = sys.argv[2:6]
    if engine == "duckdb":
        return duckdb_main(name, uri, out)
    props = {"uri": uri, "warehouse": warehouse}
    if len(sys.argv) > 6:
        props.update({
            "s3.endpoint": sys.argv[6],
            "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
            "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3.force-virtual-addressing": "false",
        })
    if uri.startswith("http://") or uri.startswith("https://"):
        from pyiceberg.catalog.rest import RestCatalog

        token = os.environ.get("ALLUVIUM_LAKE_CATALOG_TOKEN")
        if token:
            props["token"] = token
        catalog = RestCatalog(name, **props)
    else:
        catalog = SqlCatalog(name, **props)
    os.makedirs(out, exist_ok=True)
    for ns in catalog.list_namespaces():
        if tuple(ns) == ("alluvium",):
            continue  # the writer lease of a REST catalog: no rows
        for ident in catalog.list_tables(ns):
            table = catalog.load_table(ident)
            snapshot = table.current_snapshot()
            epoch = snapshot.summary.additional_properties.get("alluvium.epoch") if snapshot else None
            data = table.scan().to_arrow()
            columns = data.column_names
            rows = [[r[c] for c in columns] for r in data.to_pylist()]
            write(out, ".".join(ident), columns, rows)
            print(".".join(ident), len(rows), epoch)


if __name__ == "__main__":
    main()
