//! Which store a command uses: `--store`, else the project's own, outside the project (see
//! [`store::location`]), reached through the `.repx` link.

use std::path::PathBuf;

use super::Cli;
use super::error::{CliError, invalid};
use crate::lab::Lab;
use crate::store::{self, location};

/// The store of `lab`: `--store`, else the project's own store outside it (see
/// [`store::location`]), with the `.repx` link to it made or checked.
pub fn store_path(cli: &Cli, lab: &Lab) -> Result<PathBuf, CliError> {
    if let Some(store) = &cli.store {
        return Ok(store.clone());
    }
    let store = location::default_store(&lab.dir).map_err(invalid)?;
    // Before the link: a store that cannot be made leaves no link that leads nowhere.
    std::fs::create_dir_all(&store)
        .map_err(|e| invalid(format!("store {}: {e}", store.display())))?;
    if let location::Linked::Moved { from } = location::link(&lab.dir, &store).map_err(invalid)? {
        eprintln!(
            "note: {} led to {}, the store of the project's former place; it now leads to \
             this project's store, {}",
            lab.dir.join(store::DEFAULT_DIR).display(),
            from.display(),
            store.display()
        );
    }
    Ok(store)
}
