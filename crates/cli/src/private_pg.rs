//! A private, throw-away PostgreSQL server for `alluvium demo`: `initdb` into a directory,
//! `postgres` on a free loopback port, stopped when dropped. Only when the PostgreSQL binaries
//! are installed (on `PATH` or in `/usr/lib/postgresql/*/bin`); the demo skips the warehouse
//! otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running private server.
pub struct PrivatePostgres {
    child: Child,
    bin: PathBuf,
    data: PathBuf,
    /// `postgresql://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

/// The directory holding every program the demo needs: `initdb`, `postgres`, `pg_ctl`,
/// `pg_isready` (Debian's versioned directories first, then `PATH`).
fn bindir() -> Option<PathBuf> {
    let complete = |d: &PathBuf| {
        ["initdb", "postgres", "pg_ctl", "pg_isready"]
            .iter()
            .all(|p| d.join(p).is_file())
    };
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    debian.into_iter().chain(on_path).find(complete)
}

/// PostgreSQL refuses to run as root: run it as `nobody` then.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl PrivatePostgres {
    /// Starts a server with its data in `dir` (as root: in a directory of its own under the
    /// temporary directory, which the `nobody` user can reach, removed when dropped);
    /// `Ok(None)` when PostgreSQL is not installed.
    pub fn start(dir: &Path) -> Result<Option<Self>> {
        let Some(bin) = bindir() else {
            return Ok(None);
        };
        let data = if is_root() {
            let parent = std::env::temp_dir().join(format!("alluvium-pg-{}", std::process::id()));
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            let _ = Command::new("chmod").arg("755").arg(&parent).output();
            parent.join("pgdata")
        } else {
            dir.join("pgdata")
        };
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let _ = Command::new("chown").arg("nobody").arg(&data).output();
        let _ = Command::new("chmod").arg("700").arg(&data).output();
        if !data.join("PG_VERSION").exists() {
            let out = as_server_user(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let port = free_port()?;
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting postgres")?;
        let server = PrivatePostgres {
            child,
            bin: bin.clone(),
            data: data.clone(),
            url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(Some(server));
            }
            if Instant::now() > deadline {
                bail!("the private PostgreSQL did not become ready within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // A fast shutdown, signalled through the server's pid file (the child may be `runuser`).
        let _ = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "fast", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stopped = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                stopped = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.cleanup();
    }
}

impl PrivatePostgres {
    /// Stops the server and, when its data lives outside the demo's directory, removes it.
    fn cleanup(&self) {
        if let Some(parent) = self.data.parent() {
            if parent
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("alluvium-pg-"))
            {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
}
