//! The crate's one lock helper: a poisoned mutex is used as it is. Every critical section here
//! leaves its data consistent before anything in it can panic, so a panic elsewhere must not
//! take the proxy's shared state down with it (STYLE habit 9: `std::sync::Mutex`, never held
//! across an `.await`).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
