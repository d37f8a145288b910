//! Waiting on conditions with a deadline: poll, never sleep as synchronisation.
//!
//! ```ignore
//! let deadline = Deadline::after(Duration::from_secs(30), "a leader");
//! loop {
//!     match probe().await {
//!         Ok(Some(v)) => break v,
//!         Ok(None) => last = "no leader yet".into(),
//!         Err(e) => last = e.to_string(),
//!     }
//!     deadline.tick(&last).await?; // short pause, or an error naming `last`
//! }
//! ```

use std::fmt::Display;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Result;

/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub struct Deadline {
    what: String,
    start: Instant,
    end: Instant,
    every: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now for waiting on `what` (used in the error),
    /// polled every `POLL_INTERVAL`.
    pub fn after(timeout: Duration, what: impl Into<String>) -> Deadline {
        let start = Instant::now();
        Deadline {
            what: what.into(),
            start,
            end: start + timeout,
            every: POLL_INTERVAL,
        }
    }

    /// The same deadline, polled every `every`.
    pub fn every(self, every: Duration) -> Deadline {
        Deadline { every, ..self }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.end
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Between two polls: an error naming the last observation once the deadline
    /// has passed, else a short pause. Cancellation safe.
    pub async fn tick(&self, last: &dyn Display) -> Result<()> {
        if self.expired() {
            bail!(
                "timed out after {:.1?} waiting for {}; last observed: {}",
                self.elapsed(),
                self.what,
                last
            );
        }
        tokio::time::sleep(self.every.min(self.remaining())).await;
        Ok(())
    }
}
