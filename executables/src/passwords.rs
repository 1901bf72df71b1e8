//! argon2id hashing and checking, with its working memory reused.
//!
//! argon2 needs `m` KiB of memory per hash (19 MiB by default). Allocated afresh each time, in a
//! long-running `--serve`, it made glibc raise its mmap threshold after the first free and keep
//! every later buffer in the arena of whichever thread ran the hash: a `login` service grew to
//! 800 MiB. Here at most one buffer per CPU exists; a hash waits for a free one (argon2 is
//! bound by the CPU, so more at once would not be faster), and the buffers are kept for the
//! next. A one-shot process allocates one.

use std::sync::{Condvar, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use commondb::secrets::{ExposeSecret, SecretString};
use commondb::{Error, Result};

/// The buffers, and how many exist.
struct Memory {
    free: Mutex<(Vec<Vec<Block>>, usize)>,
    returned: Condvar,
}

static MEMORY: Memory = Memory {
    free: Mutex::new((Vec::new(), 0)),
    returned: Condvar::new(),
};

/// One of the buffers, reserved: returned to the others when dropped. A task may reserve one
/// before it takes anything else (a database connection), so that it never holds that while
/// it waits for a buffer.
pub struct Reserved(Option<Vec<Block>>);

impl std::fmt::Debug for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reserved")
    }
}

impl Reserved {
    /// Waits for a free buffer (one per CPU exists at most). Blocks the thread: call it where
    /// blocking is allowed (a process, `spawn_blocking`).
    pub fn wait() -> Reserved {
        let most = std::thread::available_parallelism().map_or(1, usize::from);
        let mut free = MEMORY.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(buffer) = free.0.pop() {
                return Reserved(Some(buffer));
            }
            if free.1 < most {
                free.1 += 1;
                return Reserved(Some(Vec::new()));
            }
            free = MEMORY
                .returned
                .wait(free)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Runs `f` with `blocks` blocks of this buffer.
    fn with<R>(&mut self, blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let buffer = self.0.get_or_insert_with(Vec::new);
        buffer.resize(blocks, Block::new());
        f(&mut buffer[..blocks])
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(buffer) = self.0.take() {
            MEMORY
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .push(buffer);
            MEMORY.returned.notify_one();
        }
    }
}

/// Runs `f` with `blocks` blocks of working memory, waiting for a buffer if one per CPU is in
/// use. Blocks the thread: call it where blocking is allowed (a process, `spawn_blocking`).
fn with_memory<R>(blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
    Reserved::wait().with(blocks, f)
}

/// Hashes `password` with argon2id, `params` and a random salt, as a PHC string
/// (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub fn hash(password: &SecretString, params: Params) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::internal(format!("no random bytes for a salt: {e}")))?;
    let failed = |e: &dyn std::fmt::Display| Error::internal(format!("hashing failed: {e}"));
    let params_string = ParamsString::try_from(&params).map_err(|e| failed(&e))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; 32];
    with_memory(params.block_count(), |memory| {
        argon.hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            &salt,
            &mut out,
            memory,
        )
    })
    .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: params_string,
        salt: Some(Salt::new(&salt).map_err(|e| failed(&e))?),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` is the one `phc` (a PHC string of argon2) was made from; `false` for a
/// string that is not one. The comparison takes the same time wherever the outputs differ.
pub fn verify(password: &SecretString, phc: &str) -> bool {
    verify_in(&mut Reserved::wait(), password, phc)
}

/// [`verify`] in a buffer reserved beforehand.
pub fn verify_in(buffer: &mut Reserved, password: &SecretString, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm.as_str()),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = buffer.with(params.block_count(), |memory| {
        argon.hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            salt.as_ref(),
            &mut out,
            memory,
        )
    });
    computed.is_ok() && Output::new(&out).is_ok_and(|out| &out == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    #[test]
    fn a_hash_verifies_its_password_only_and_reads_as_argon2s_own() {
        let params = Params::new(64, 1, 1, None).unwrap();
        let h = hash(&secret("correct horse"), params).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{h}");
        assert!(verify(&secret("correct horse"), &h));
        assert!(!verify(&secret("wrong horse"), &h));
        assert!(!verify(&secret("correct horse"), "not a hash"));
        // The argon2 crate's own verifier agrees.
        use argon2::password_hash::PasswordVerifier;
        let parsed = PasswordHash::new(&h).unwrap();
        Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .unwrap();
    }

    #[test]
    fn hashes_made_elsewhere_verify() {
        // Made by create-user with the default costs (OWASP's): "correct horse battery staple".
        let h = "$argon2id$v=19$m=19456,t=2,p=1$tTm72wYUU3vLpOzTtBm9eg$cWTyb6zCU2KD8UOdrnzPoeOzo8+Ika7UO0C1R4KYuGs";
        assert!(verify(&secret("correct horse battery staple"), h));
        assert!(!verify(&secret("correct horse battery stapler"), h));
    }

    #[test]
    fn many_hashes_at_once_share_one_buffer_per_cpu() {
        let params = Params::new(64, 1, 1, None).unwrap();
        std::thread::scope(|s| {
            for i in 0..16 {
                let params = params.clone();
                s.spawn(move || hash(&secret(&format!("pw{i}")), params).unwrap());
            }
        });
        let most = std::thread::available_parallelism().map_or(1, usize::from);
        // (Other tests may be hashing meanwhile: only the count of buffers is checked.)
        let made = MEMORY.free.lock().unwrap().1;
        assert!((1..=most).contains(&made), "{made} buffers made");
    }
}
