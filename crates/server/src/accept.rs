//! Accepting connections: one thread per client, a cap on how many, and
//! the bookkeeping that lets a shutdown or a newcomer reach every session.
//!
//! When the cap is hit, the connection that has been idle longest (between
//! frames, for at least [`EVICT_AFTER_IDLE`]) is closed to make room, so a
//! crowd of idle connections cannot lock honest clients out. Only when every
//! session is busy is the newcomer refused, with a log line saying so.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::Shared;
use crate::session;

/// How long a session must have been idle before it may be evicted.
pub const EVICT_AFTER_IDLE: Duration = Duration::from_secs(2);

/// A live session, as the accept loop sees it.
#[derive(Debug)]
pub struct Slot {
    peer: SocketAddr,
    stream: TcpStream,
    busy: AtomicBool,
    /// Milliseconds since the registry's epoch when the session last
    /// became idle.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Slot {
    /// Between frames: may be evicted or closed at shutdown.
    pub fn set_idle(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.idle_since.store(now, Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }

    /// Inside a frame or an upload: left alone until the grace period ends.
    pub fn set_busy(&self) {
        self.busy.store(true, Ordering::SeqCst);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::SeqCst) {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::SeqCst));
        Some(self.epoch.elapsed().saturating_sub(since))
    }

    /// Ends the session's reads; it notices at its next read and leaves.
    fn close(&self, how: Shutdown) {
        let _ = self.stream.shutdown(how);
    }
}

/// Every live session, by id.
#[derive(Debug)]
pub struct Registry {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            slots: Mutex::default(),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Registry {
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // A panicking session thread cannot leave the map half-updated
        // (inserts and removes are single calls), so a poisoned lock is safe
        // to keep using.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many sessions `ip` holds now.
    fn count_from(&self, ip: std::net::IpAddr) -> usize {
        self.slots().values().filter(|s| s.peer.ip() == ip).count()
    }

    /// Closes the read side of every idle session (used at shutdown).
    pub fn close_idle(&self) {
        for slot in self.slots().values() {
            if slot.idle_for().is_some() {
                slot.close(Shutdown::Read);
            }
        }
    }

    /// Ends the reads of every session (the grace period is over): each
    /// finds its upload cut, tells its client why, and leaves.
    pub fn close_reads(&self) {
        for slot in self.slots().values() {
            slot.close(Shutdown::Read);
        }
    }

    /// Closes every session outright: for one stuck writing to a client
    /// that does not read, which closing reads does not reach.
    pub fn close_all(&self) {
        for slot in self.slots().values() {
            slot.close(Shutdown::Both);
        }
    }

    /// Closes the session idle longest, if one has been idle long enough,
    /// and frees its place at once. Only its read side is closed: acks it
    /// still owes for files it received go out before it leaves.
    fn evict_one(&self) -> Option<SocketAddr> {
        let mut slots = self.slots();
        let (&id, _) = slots
            .iter()
            .filter_map(|(id, s)| s.idle_for().map(|d| ((id, s), d)))
            .filter(|(_, d)| *d >= EVICT_AFTER_IDLE)
            .max_by_key(|(_, d)| *d)
            .map(|(entry, _)| entry)?;
        let victim = slots.remove(&id)?;
        victim.close(Shutdown::Read);
        Some(victim.peer)
    }
}

/// Removes a session from the books when its thread ends.
struct Leave<'a> {
    registry: &'a Registry,
    shared: &'a Shared,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.registry.slots().remove(&self.id);
        self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a new connection: evicts or refuses at the cap, else starts its
/// session thread.
pub(crate) fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    registry: &Arc<Registry>,
) {
    let per_address = shared.limits.max_per_address;
    if per_address > 0 && registry.count_from(peer.ip()) >= per_address {
        warn!(%peer, "per-address limit ({per_address}) reached: refusing connection");
        return;
    }
    let max = shared.limits.max_connections;
    if registry.len() >= max {
        match registry.evict_one() {
            Some(idle) => {
                warn!(%peer, "connection limit ({max}) reached: closed idle connection from {idle} to make room")
            }
            None => {
                warn!(%peer, "connection limit ({max}) reached and every session is busy: refusing connection");
                return;
            }
        }
    }
    let control = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, "cannot take connection: {e}");
            return;
        }
    };
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
    let slot = Arc::new(Slot {
        peer,
        stream: control,
        busy: AtomicBool::new(false),
        idle_since: AtomicU64::new(registry.epoch.elapsed().as_millis() as u64),
        epoch: registry.epoch,
    });
    registry.slots().insert(id, Arc::clone(&slot));
    shared.sessions.fetch_add(1, Ordering::Relaxed);
    let (for_thread, registry_for_thread) = (Arc::clone(shared), Arc::clone(registry));
    let spawned = thread::Builder::new()
        .name(format!("ferry-conn-{id}"))
        .spawn(move || {
            // Frees the place however the session ends, a panic included,
            // so a bug in one session cannot use up the server's places.
            let _leave = Leave {
                registry: &registry_for_thread,
                shared: &for_thread,
                id,
            };
            session::run(stream, peer, &for_thread, &slot);
        });
    if let Err(e) = spawned {
        warn!(%peer, "cannot start a thread for the connection: {e}");
        // Nothing ran to leave the place: give it back here, or every
        // later session's share of open files would stay smaller.
        registry.slots().remove(&id);
        shared.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
