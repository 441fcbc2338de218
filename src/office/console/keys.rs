//! The office server's own `operator` key (PROTOCOL 1.1 section 1), which
//! signs manifests and commands and never counts for a notice, and the
//! `[trust]` block screens need: enrolled staff as `office`, supervisors as
//! `supervisor`, the operator key as `operator`.
//!
//! The operator key lives beside the office's database, in the format of
//! `gongkai keygen` (the seed as base64, mode 0600), made at first need.
//! People's keys are never here: only their public halves, in the database.

use std::path::{Path, PathBuf};

use crate::protocol::{PublicKey, SecretKey};
use crate::store::office::{User, UserRole};

use super::Scope;

/// Where the operator key of the office whose database is `database` lives.
pub fn operator_key_path(database: &Path) -> PathBuf {
    database.with_extension("operator.key")
}

/// The operator key, made (mode 0600) if there is none yet.
pub fn operator_key(database: &Path) -> anyhow::Result<SecretKey> {
    let path = operator_key_path(database);
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let public = crate::office::keygen(&path)?;
        tracing::info!(
            "made the operator key {} (key id {})",
            path.display(),
            public.key_id()
        );
    }
    crate::office::sign::read_key(&path)
}

/// The `[trust]` block for screens: every enrolled person's key under their
/// role, the keys office.toml lists per scope, and the operator key.
pub fn trust_block(users: &[User], scopes: &[Scope], operator: &PublicKey) -> String {
    let mut office = Vec::new();
    let mut supervisor = Vec::new();
    for user in users {
        let Some(key) = user.public_key.as_deref() else {
            continue;
        };
        let Ok(key) = PublicKey::from_base64(key) else {
            continue;
        };
        let line = (key.to_base64(), user.name.clone());
        match user.role {
            UserRole::Staff => office.push(line),
            UserRole::Supervisor => supervisor.push(line),
            UserRole::Viewer => {}
        }
    }
    for scope in scopes {
        let note = format!("office.toml [[scope]] {}", scope.id);
        office.extend(scope.office.iter().map(|k| (k.to_base64(), note.clone())));
        supervisor.extend(
            scope
                .supervisor
                .iter()
                .map(|k| (k.to_base64(), note.clone())),
        );
    }
    let list = |keys: &[(String, String)]| -> String {
        let mut seen = std::collections::BTreeSet::new();
        let lines: Vec<String> = keys
            .iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .map(|(k, who)| format!("    \"{k}\", # {}", who.replace(['\n', '\r'], " ")))
            .collect();
        if lines.is_empty() {
            "[]".to_owned()
        } else {
            format!("[\n{}\n]", lines.join("\n"))
        }
    };
    let nobody = if office.is_empty() || supervisor.is_empty() {
        "# Nobody of a role has enrolled yet: until someone has, screens with\n\
         # this block accept no notice.\n"
    } else {
        ""
    };
    format!(
        "{nobody}# The office console's keys: staff sign as office, the supervisory\n\
         # committee as supervisor; the office server's operator key signs\n\
         # manifests and commands only, never a notice.\n\
         [trust]\n\
         office = {}\n\
         supervisor = {}\n\
         operator = [\"{}\"]\n",
        list(&office),
        list(&supervisor),
        operator.to_base64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trust_block_parses_as_toml_with_each_key_under_its_role() {
        let staff = SecretKey::from_seed([1; 32]).public();
        let supervisor = SecretKey::from_seed([2; 32]).public();
        let operator = SecretKey::from_seed([6; 32]).public();
        let user = |name: &str, role, key: Option<&PublicKey>| User {
            name: name.into(),
            role,
            public_key: key.map(PublicKey::to_base64),
            enrolled: key.is_some(),
        };
        let users = [
            user("李\"四", UserRole::Staff, Some(&staff)),
            user("王五", UserRole::Supervisor, Some(&supervisor)),
            user("街道", UserRole::Viewer, None),
        ];
        let text = trust_block(&users, &[], &operator);
        let value: toml::Value = toml::from_str(&text).unwrap();
        let keys = |role: &str| -> Vec<String> {
            value["trust"][role]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(keys("office"), [staff.to_base64()]);
        assert_eq!(keys("supervisor"), [supervisor.to_base64()]);
        assert_eq!(keys("operator"), [operator.to_base64()]);
    }

    #[test]
    fn the_operator_key_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("office.db");
        let first = operator_key(&database).unwrap().public();
        assert_eq!(operator_key(&database).unwrap().public(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(operator_key_path(&database))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
