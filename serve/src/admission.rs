//! Admission control: a bound on the requests in the server (running plus waiting for a
//! row), and the drain of a graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::api::{ApiError, RETRY_AFTER_S};

/// Counts the requests in the server and refuses past the bound, or while draining.
#[derive(Debug)]
pub struct Admission {
    active: AtomicUsize,
    limit: usize,
    draining: AtomicBool,
}

/// A request's place in the server, given back when dropped (answered, failed or gone).
#[derive(Debug)]
pub struct Ticket(Arc<Admission>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// At most `running + waiting` requests at once.
    pub fn new(running: usize, waiting: usize) -> Arc<Self> {
        Arc::new(Admission { active: AtomicUsize::new(0), limit: running + waiting, draining: AtomicBool::new(false) })
    }

    /// A place for one more request: 503 while draining, 429 when full.
    pub fn enter(self: &Arc<Self>) -> Result<Ticket, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("shutting_down", "the server is shutting down; send the request to another replica or retry".into()));
        }
        let taken = self.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.limit).then_some(n + 1));
        match taken {
            Ok(_) => Ok(Ticket(self.clone())),
            Err(n) => Err(ApiError::rate_limited(format!("{n} requests are running or waiting (the bound is {}); retry after {RETRY_AFTER_S} s", self.limit))),
        }
    }

    /// Requests in the server now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Stops admitting: every later request gets 503.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_places_come_back() {
        let a = Admission::new(2, 1);
        let tickets: Vec<Ticket> = (0..3).map(|_| a.enter().unwrap()).collect();
        assert_eq!(a.enter().unwrap_err().status.as_u16(), 429);
        drop(tickets);
        assert_eq!(a.active(), 0);
        let _t = a.enter().unwrap();
        a.drain();
        assert_eq!(a.enter().unwrap_err().status.as_u16(), 503);
    }
}
