//! Pins: runs whose outputs `repx gc` keeps even when no registered lab reaches them.
//!
//! `repx gc pin RUN` writes `pins/<digest>` naming the lab file, the run and the ids of the
//! run's jobs as they are then; `repx gc unpin RUN` removes it. A pin keeps those ids, not
//! the run: a lab edited after pinning changes what the run reaches, not what was pinned.
//! Each pin file is written whole (to `tmp/`, then renamed), under the store's lock.

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StoreError, io};

/// The directory of pins inside a store.
const PINS: &str = "pins";

/// One pinned run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The lab file the run is in.
    pub lab: PathBuf,
    pub run: String,
    /// The job ids kept.
    pub jobs: Vec<String>,
    /// When it was pinned, in Unix milliseconds.
    pub since_ms: u64,
}

impl super::Store {
    fn pin_file(&self, lab: &Path, run: &str) -> PathBuf {
        let mut key = lab.as_os_str().as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(run.as_bytes());
        let name = blake3::hash(&key).to_hex();
        self.root.join(PINS).join(&name[..32])
    }

    /// Pins `pin`, replacing an earlier pin of the same run of the same lab.
    pub fn pin(&self, pin: &Pin) -> Result<(), StoreError> {
        let file = self.pin_file(&pin.lab, &pin.run);
        let dir = self.root.join(PINS);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = self.tmp_path("pin");
        let text = serde_json::to_vec_pretty(pin).expect("a pin serializes");
        fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&text))
            .map_err(io(&tmp))?;
        fs::rename(&tmp, &file).map_err(io(&file))
    }

    /// Removes the pin of `run` of `lab`; whether there was one.
    pub fn unpin(&self, lab: &Path, run: &str) -> Result<bool, StoreError> {
        let file = self.pin_file(lab, run);
        match fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&file)(e)),
        }
    }

    /// Every pin, sorted by lab and run. A pin file that does not parse is an error: what it
    /// keeps is unknown, and `gc` must not remove it.
    pub fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let dir = self.root.join(PINS);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut pins = Vec::new();
        for entry in entries {
            let file = entry.map_err(io(&dir))?.path();
            let bytes = fs::read(&file).map_err(io(&file))?;
            let pin: Pin = serde_json::from_slice(&bytes).map_err(|e| {
                io(&file)(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a pin ({e}); remove it to stop keeping what it kept"),
                ))
            })?;
            pins.push(pin);
        }
        pins.sort_by(|a, b| (&a.lab, &a.run).cmp(&(&b.lab, &b.run)));
        Ok(pins)
    }
}
