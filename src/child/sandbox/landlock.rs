//! The Landlock ruleset of a child, built in the parent (the child only calls
//! `landlock_restrict_self` on the descriptor): read and execute beneath `read_only_paths`,
//! everything beneath `writable_paths`, nothing anywhere else. Always at the kernel's full
//! ABI as a hard requirement: a kernel that cannot enforce a right refuses the child instead of
//! silently granting it.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope,
};

use super::{SandboxError, fail};

/// The newest ABI this kernel enforces in full (probed once), or `None` without Landlock.
pub(crate) fn kernel_abi() -> Option<ABI> {
    static ABI_SEEN: OnceLock<Option<ABI>> = OnceLock::new();
    *ABI_SEEN.get_or_init(|| {
        [ABI::V6, ABI::V5, ABI::V4, ABI::V3, ABI::V2, ABI::V1]
            .into_iter()
            .find(|abi| base(*abi).and_then(|r| r.create()).is_ok())
    })
}

/// A ruleset handling every right of `abi`, refusing to be weaker than asked.
fn base(abi: ABI) -> Result<Ruleset, landlock::RulesetError> {
    let mut r = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if abi >= ABI::V6 {
        // A child may signal and reach abstract sockets of its own tree only.
        r = r.scope(Scope::from_all(abi))?;
    }
    Ok(r)
}

/// The ruleset descriptor for these paths.
pub(super) fn ruleset(
    read_only: &[PathBuf],
    writable: &[PathBuf],
) -> Result<OwnedFd, SandboxError> {
    let abi = kernel_abi()
        .ok_or_else(|| SandboxError("Landlock is not supported by this kernel".into()))?;
    let mut created = base(abi)
        .and_then(|r| r.create())
        .map_err(|e| fail("creating the Landlock ruleset", e))?;
    for (paths, access) in [
        (read_only, AccessFs::from_read(abi)),
        (writable, AccessFs::from_all(abi)),
    ] {
        for path in paths {
            let fd =
                PathFd::new(path).map_err(|e| fail(format!("opening {}", path.display()), e))?;
            // A file takes only the rights that apply to files.
            let access = if is_dir(path) {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| {
                    fail(
                        format!("adding {} to the Landlock ruleset", path.display()),
                        e,
                    )
                })?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| SandboxError("the Landlock ruleset has no descriptor".into()))
}

fn is_dir(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_dir())
}
