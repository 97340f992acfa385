//! Checkpoints on disk: where they live, how one is made durable, and how
//! the newest usable one is found again.
//!
//! ```text
//!   STATE_DIR/
//!     db/                         the live RocksDB (scratch between checkpoints)
//!     checkpoints/
//!       chk-0000000006/           kept (the last K complete ones are)
//!       chk-0000000007/
//!         000012.sst ...          RocksDB checkpoint: SSTs hard-linked
//!         MANIFEST-000005, CURRENT, OPTIONS-...
//!         _eddy_checkpoint.json   written last: temp file, fsync, rename
//! ```
//!
//! A checkpoint exists only once its manifest does, and the manifest
//! lists every file with its size and CRC-32. Recovery walks checkpoints
//! newest first and takes the first whose files all check out; a damaged
//! one is reported by file name and skipped. Recovery never opens the live
//! database as it was: it is rebuilt from the checkpoint (SSTs hard-linked,
//! the small mutable files copied), so nothing written after the
//! checkpoint survives.
//!
//! Besides the state, a manifest carries the checkpoint's *committables*:
//! what each sink handed over at its barrier to publish its output written
//! up to it (two-phase commit: file renames, a transaction's id). They are
//! opaque here; the runtime has them committed once the manifest is
//! durable, and again at recovery (committing is idempotent).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Result, RocksDbBackend, RocksDbOptions, StateError};

/// The manifest's file name inside a checkpoint directory.
pub const MANIFEST_FILE: &str = "_eddy_checkpoint.json";
/// Format 2: committables of any sink (format 1 held file renames).
const FORMAT: u32 = 2;

/// What a complete checkpoint holds, as written in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: u64,
    pub created_unix_ms: u64,
    /// The job's input was exhausted and all its output committed.
    pub finished: bool,
    /// Sink output published by this checkpoint.
    pub commits: Vec<Committable>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Bytes of state files (shared, hard-linked files counted in full).
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What one sink subtask handed a checkpoint to publish its output: opaque
/// to the state crate, given back to that sink's committer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committable {
    /// The sink operator's id in the job's plan.
    pub sink: String,
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
}

/// A checkpoint found usable at recovery.
#[derive(Debug)]
pub struct Recovered {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// Newer checkpoints that were damaged and skipped, with the reason.
    pub skipped: Vec<StateError>,
}

/// The checkpoints of one job's state directory.
#[derive(Debug)]
pub struct CheckpointStore {
    root: PathBuf,
    retain: usize,
    /// CRCs of immutable SST files already checksummed, by name and size:
    /// a checkpoint reads only the SSTs that are new since the last one.
    known: Mutex<HashMap<(String, u64), u32>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn damaged(path: &Path, reason: impl Into<String>) -> StateError {
    StateError::Damaged {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl CheckpointStore {
    /// The store of `root`, keeping the newest `retain` (at least 1)
    /// complete checkpoints.
    pub fn new(root: &Path, retain: usize) -> Result<Self> {
        let store = Self {
            root: root.to_path_buf(),
            retain: retain.max(1),
            known: Mutex::default(),
        };
        fs::create_dir_all(store.checkpoints_dir()).map_err(io_err(root))?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The live database's directory.
    pub fn db_dir(&self) -> PathBuf {
        self.root.join("db")
    }

    fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.checkpoints_dir().join(format!("chk-{id:010}"))
    }

    /// Checkpoint directories (complete or not), newest first.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let dir = self.checkpoints_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((id, entry.path()));
        }
        out.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        Ok(out)
    }

    /// The highest checkpoint id ever started here (complete or not).
    pub fn highest_id(&self) -> Result<u64> {
        Ok(self.list()?.first().map_or(0, |(id, _)| *id))
    }

    /// Takes checkpoint `id` of `db` and makes it durable with `commits`.
    pub fn write(
        &self,
        db: &RocksDbBackend,
        id: u64,
        finished: bool,
        commits: Vec<Committable>,
    ) -> Result<Manifest> {
        let dir = self.checkpoint_dir(id);
        if dir.exists() {
            // Left by an attempt that died before its manifest was written.
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        db.create_checkpoint(&dir)?;
        crash_point("state-written");
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map_err(io_err(&path))?.len();
            let crc32 = self.checksum(&path, &name, size)?;
            files.push(FileEntry { name, size, crc32 });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let manifest = Manifest {
            format: FORMAT,
            id,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            finished,
            commits,
            files,
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| StateError::Corrupt {
            table: MANIFEST_FILE.into(),
            reason: e.to_string(),
        })?;
        write_atomically(&dir.join(MANIFEST_FILE), &json)?;
        self.prune(id)?;
        Ok(manifest)
    }

    fn checksum(&self, path: &Path, name: &str, size: u64) -> Result<u32> {
        let immutable = name.ends_with(".sst");
        let key = (name.to_string(), size);
        if immutable
            && let Some(&crc) = self
                .known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
        {
            return Ok(crc);
        }
        let crc = crc_of(path)?;
        if immutable {
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, crc);
        }
        Ok(crc)
    }

    /// Deletes all but the newest `retain` complete checkpoints, and
    /// incomplete ones older than `newest`.
    fn prune(&self, newest: u64) -> Result<()> {
        let mut complete = 0;
        for (id, dir) in self.list()? {
            if id > newest {
                continue;
            }
            let keep = dir.join(MANIFEST_FILE).exists() && {
                complete += 1;
                complete <= self.retain
            };
            if !keep {
                tracing::debug!(checkpoint = id, "deleting old checkpoint");
                fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            }
        }
        Ok(())
    }

    /// The newest checkpoint whose manifest and files all check out.
    /// Damaged newer ones are listed in [`Recovered::skipped`]. `Ok(None)`:
    /// there is no checkpoint at all; an error: there are some, but none is
    /// usable.
    pub fn latest(&self) -> Result<Option<Recovered>> {
        let mut skipped = Vec::new();
        let mut any = false;
        for (_, dir) in self.list()? {
            let manifest_path = dir.join(MANIFEST_FILE);
            if !manifest_path.exists() {
                // An attempt that died before completing: not a checkpoint.
                continue;
            }
            any = true;
            match verify(&dir) {
                Ok(manifest) => {
                    return Ok(Some(Recovered {
                        manifest,
                        dir,
                        skipped,
                    }));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a damaged checkpoint");
                    skipped.push(e);
                }
            }
        }
        if !any {
            return Ok(None);
        }
        let reasons: Vec<String> = skipped.iter().map(|e| e.to_string()).collect();
        Err(StateError::NoUsableCheckpoint {
            path: self.checkpoints_dir().display().to_string(),
            reasons: reasons.join("; "),
        })
    }

    /// Rebuilds the live database from `recovered` (or empties it when
    /// `None`) and opens it.
    pub fn restore(
        &self,
        recovered: Option<&Recovered>,
        options: RocksDbOptions,
    ) -> Result<RocksDbBackend> {
        let db = self.db_dir();
        if db.exists() {
            fs::remove_dir_all(&db).map_err(io_err(&db))?;
        }
        fs::create_dir_all(&db).map_err(io_err(&db))?;
        if let Some(r) = recovered {
            for f in &r.manifest.files {
                let (from, to) = (r.dir.join(&f.name), db.join(&f.name));
                let linked = f.name.ends_with(".sst") && fs::hard_link(&from, &to).is_ok();
                if !linked {
                    fs::copy(&from, &to).map_err(io_err(&from))?;
                }
            }
        }
        RocksDbBackend::open_with(&db, options)
    }
}

/// For the crash test: with `EDDY_CRASH_AT=<point>` in the environment the
/// process kills itself (SIGKILL, as `kill -9` would) the first time it
/// reaches `point`: `state-written` (a checkpoint's state is on disk, its
/// manifest is not) or `manifest-written` (the checkpoint is complete, the
/// sink output it publishes is not yet renamed into place).
pub fn crash_point(point: &str) {
    if std::env::var("EDDY_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("crash point {point}: killing the process");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        // `kill` cannot fail on our own pid; never go on past the point.
        std::process::abort();
    }
}

/// Reads a checkpoint's manifest and checks every file it lists.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read(&path).map_err(|e| damaged(&path, e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| damaged(&path, format!("unreadable: {e}")))?;
    let format = value.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format != u64::from(FORMAT) {
        let hint = if format < u64::from(FORMAT) {
            " (written by an older eddy: start the job with a new state directory)"
        } else {
            ""
        };
        return Err(damaged(&path, format!("unknown format {format}{hint}")));
    }
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|e| damaged(&path, format!("unreadable: {e}")))?;
    for f in &manifest.files {
        let file = dir.join(&f.name);
        let meta = fs::metadata(&file).map_err(|_| damaged(&file, "missing"))?;
        if meta.len() != f.size {
            return Err(damaged(
                &file,
                format!("{} bytes, the manifest says {}", meta.len(), f.size),
            ));
        }
        if crc_of(&file)? != f.crc32 {
            return Err(damaged(&file, "checksum mismatch"));
        }
    }
    Ok(manifest)
}

fn crc_of(path: &Path) -> Result<u32> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize())
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the whole new one: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    sync_parent(path)
}

/// Makes a rename or a new file in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let parent = parent.unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_err(parent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateBackend;

    fn store_with(ids: &[u64]) -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 2).unwrap();
        let db = store.restore(None, RocksDbOptions::default()).unwrap();
        let t = db.open_table("t").unwrap();
        for &id in ids {
            t.put(b"at", &id.to_be_bytes()).unwrap();
            store.write(&db, id, false, vec![]).unwrap();
        }
        (dir, store)
    }

    fn value_at(store: &CheckpointStore, r: &Recovered) -> u64 {
        let db = store.restore(Some(r), RocksDbOptions::default()).unwrap();
        let v = db.open_table("t").unwrap().get(b"at").unwrap().unwrap();
        u64::from_be_bytes(v.try_into().unwrap())
    }

    #[test]
    fn recovery_sees_the_state_of_the_newest_checkpoint_only() {
        let (_dir, store) = store_with(&[1, 2]);
        // Written after checkpoint 2: must not survive recovery.
        let live = RocksDbBackend::open(&store.db_dir()).unwrap();
        live.open_table("t")
            .unwrap()
            .put(b"at", &99u64.to_be_bytes())
            .unwrap();
        drop(live);
        let r = store.latest().unwrap().unwrap();
        assert_eq!(r.manifest.id, 2);
        assert!(r.skipped.is_empty());
        assert_eq!(value_at(&store, &r), 2);
    }

    #[test]
    fn only_the_last_k_checkpoints_are_kept() {
        let (_dir, store) = store_with(&[1, 2, 3, 4]);
        let ids: Vec<u64> = store.list().unwrap().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![4, 3]);
    }

    #[test]
    fn a_corrupt_file_is_named_and_the_previous_checkpoint_used() {
        let (_dir, store) = store_with(&[1, 2]);
        let newest = store.checkpoint_dir(2);
        let sst = fs::read_dir(&newest)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "sst"))
            .unwrap();
        // Flip a byte, as a disk error would (break the hard link first:
        // the file is shared with the live database).
        let mut bytes = fs::read(&sst).unwrap();
        bytes[10] ^= 0xff;
        fs::remove_file(&sst).unwrap();
        fs::write(&sst, &bytes).unwrap();
        let r = store.latest().unwrap().unwrap();
        assert_eq!(r.manifest.id, 1);
        let reason = r.skipped[0].to_string();
        assert!(reason.contains(&sst.display().to_string()), "{reason}");
        assert!(reason.contains("checksum mismatch"), "{reason}");
        assert_eq!(value_at(&store, &r), 1);
    }

    #[test]
    fn a_missing_file_or_manifest_is_reported() {
        let (_dir, store) = store_with(&[1, 2]);
        let current = store.checkpoint_dir(2).join("CURRENT");
        fs::remove_file(&current).unwrap();
        let r = store.latest().unwrap().unwrap();
        assert_eq!(r.manifest.id, 1);
        assert!(r.skipped[0].to_string().contains("CURRENT"));
        assert!(r.skipped[0].to_string().contains("missing"));
        // With the only other manifest unreadable, nothing is usable.
        fs::write(store.checkpoint_dir(1).join(MANIFEST_FILE), b"{not json").unwrap();
        let err = store.latest().unwrap_err().to_string();
        assert!(err.contains("no usable checkpoint"), "{err}");
        assert!(err.contains(MANIFEST_FILE), "{err}");
    }

    #[test]
    fn an_incomplete_checkpoint_is_ignored() {
        let (_dir, store) = store_with(&[1]);
        fs::create_dir_all(store.checkpoint_dir(2)).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().manifest.id, 1);
        assert_eq!(store.highest_id().unwrap(), 2);
    }
}
