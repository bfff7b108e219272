//! The box page's admin password: stored as an argon2id hash (a PHC string, made by `edge-agent
//! admin-password`), so that the file gives nobody the password. A file holding the password's
//! SHA-256 (what earlier agents read) is still taken, with a warning: a fast hash of a short
//! password is found in minutes.
//!
//! This module only reads, makes and checks hashes; the sign-in is the server's.

use std::path::Path;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use sha2::{Digest as _, Sha256};

use super::LocalApiError;

/// A stored admin password.
#[derive(Clone)]
pub(crate) enum AdminPassword {
    /// argon2id, as a PHC string.
    Argon2(String),
    /// The password's SHA-256 (earlier agents' files).
    LegacySha256([u8; 32]),
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdminPassword::Argon2(_) => "AdminPassword::Argon2(<redacted>)",
            AdminPassword::LegacySha256(_) => "AdminPassword::LegacySha256(<redacted>)",
        })
    }
}

impl AdminPassword {
    /// Reads the password file: an argon2id PHC string, or 64 hex digits of a SHA-256.
    ///
    /// # Errors
    /// [`LocalApiError::PasswordFile`] when it cannot be read, [`LocalApiError::PasswordHash`]
    /// when it holds neither.
    pub(crate) fn read(path: &Path) -> Result<AdminPassword, LocalApiError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocalApiError::PasswordFile {
            path: path.to_owned(),
            source,
        })?;
        let first = text.split_whitespace().next().unwrap_or("");
        if first.starts_with("$argon2id$") && argon2::PasswordHash::new(first).is_ok() {
            return Ok(AdminPassword::Argon2(first.to_owned()));
        }
        match protocol::Digest::from_hex(first) {
            Ok(d) => {
                tracing::warn!(
                    path = %path.display(),
                    "the admin password file holds a SHA-256: make an argon2id hash with `edge-agent admin-password`"
                );
                Ok(AdminPassword::LegacySha256(d.0))
            }
            Err(_) => Err(LocalApiError::PasswordHash {
                path: path.to_owned(),
            }),
        }
    }

    /// Whether `given` is the password. Slow by design for argon2id (tens of milliseconds):
    /// call it off the executor.
    pub(crate) fn verify(&self, given: &str) -> bool {
        match self {
            AdminPassword::Argon2(phc) => argon2::PasswordHash::new(phc).is_ok_and(|hash| {
                argon2::Argon2::default()
                    .verify_password(given.as_bytes(), &hash)
                    .is_ok()
            }),
            AdminPassword::LegacySha256(expected) => {
                let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
                // constant time: every byte compared
                given
                    .iter()
                    .zip(expected)
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
            }
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The OS gave no randomness for the salt.
    #[error("the OS random source failed")]
    Random(#[source] getrandom::Error),
    /// argon2 refused (an over-long password, say).
    #[error("argon2id hashing failed: {0}")]
    Argon2(argon2::password_hash::Error),
}

/// An argon2id hash (PHC string, default parameters, a random salt from the OS) of `password`.
///
/// # Errors
/// [`HashError`].
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(HashError::Argon2)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argon2id_file_is_read_and_checks_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let phc = hash("technician-secret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert_ne!(phc, hash("technician-secret").unwrap(), "a salt each time");
        std::fs::write(&file, format!("{phc}\n")).unwrap();
        let pw = AdminPassword::read(&file).unwrap();
        assert!(matches!(pw, AdminPassword::Argon2(_)));
        assert!(pw.verify("technician-secret"));
        assert!(!pw.verify("technician-secreT"));
        assert!(!format!("{pw:?}").contains("argon2id$"), "redacted");
    }

    #[test]
    fn a_sha256_file_of_earlier_agents_is_still_taken_and_anything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(
            &good,
            "9559a2c6dcb75e405de9e18741918aff44b1c4b4e87f79db4413bd65f7003644  -\n",
        )
        .unwrap();
        let pw = AdminPassword::read(&good).unwrap();
        assert!(pw.verify("technician-secret"));
        assert!(!pw.verify("guess"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "technician-secret\n").unwrap();
        assert!(matches!(
            AdminPassword::read(&plain),
            Err(LocalApiError::PasswordHash { .. })
        ));
        assert!(matches!(
            AdminPassword::read(&dir.path().join("missing")),
            Err(LocalApiError::PasswordFile { .. })
        ));
    }
}
