//! Webhook-triggered polls, paced: no more than one a second, and a burst
//! of hooks costs at most one poll in flight plus one queued.
//!
//! The HTTP listener pokes a [`Notify`], which keeps at most one permit, so
//! hooks that arrive *during* a poll make one more poll. But a local or
//! nearby repository answers in a millisecond: hooks arriving between
//! polls each started a new one (3,000 hooks in a second made ~1,680 polls),
//! and against a forge every poll is a round trip on a rate-limited token.
//! `TriggerPace` stands between the poke and the loop: once poked, it waits
//! until a second after the last triggered poll began, then drops the pokes
//! that came meanwhile, because the poll about to begin reads the branch
//! after all of them. The timer's own polls are not paced: they already are.

use futures::FutureExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The shortest time between two webhook-triggered polls.
pub const MIN_GAP: Duration = Duration::from_secs(1);

pub struct TriggerPace {
    trigger: Arc<Notify>,
    /// Set on SIGTERM, which pokes `trigger` to wake the loop: stopping is
    /// never paced.
    stop: Arc<AtomicBool>,
    /// When the last triggered poll was let through.
    last: Option<Instant>,
    /// A poke was taken but its poll not let through yet (the future was
    /// dropped while waiting out the gap): the next call resumes it.
    poked: bool,
}

impl TriggerPace {
    pub fn new(trigger: Arc<Notify>, stop: Arc<AtomicBool>) -> TriggerPace {
        TriggerPace {
            trigger,
            stop,
            last: None,
            poked: false,
        }
    }

    /// Resolves when a triggered poll may begin. Cancel-safe, for use in a
    /// `select!`: a poke taken by a dropped call is kept for the next one.
    pub async fn next(&mut self) {
        if !self.poked {
            self.trigger.notified().await;
            self.poked = true;
        }
        if let Some(last) = self.last
            && !self.stop.load(Ordering::SeqCst)
        {
            tokio::time::sleep_until(last + MIN_GAP).await;
        }
        // Pokes that came while waiting are answered by this poll.
        let _ = self.trigger.notified().now_or_never();
        self.poked = false;
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> (TriggerPace, Arc<Notify>, Arc<AtomicBool>) {
        let trigger = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        (
            TriggerPace::new(trigger.clone(), stop.clone()),
            trigger,
            stop,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_poke_passes_at_once_and_the_next_a_gap_later() {
        let (mut p, trigger, _) = pace();
        let t0 = Instant::now();
        trigger.notify_one();
        p.next().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        trigger.notify_one();
        p.next().await;
        assert_eq!(t0.elapsed(), MIN_GAP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_poll_now_and_one_a_gap_later() {
        let (mut p, trigger, _) = pace();
        trigger.notify_one();
        p.next().await;
        // A burst while that poll runs, and more while the next one waits.
        for _ in 0..1000 {
            trigger.notify_one();
        }
        let t0 = Instant::now();
        let waiting = tokio::spawn(async move {
            p.next().await;
            p
        });
        tokio::time::sleep(MIN_GAP / 2).await;
        for _ in 0..1000 {
            trigger.notify_one();
        }
        let mut p = waiting.await.unwrap();
        assert_eq!(t0.elapsed(), MIN_GAP);
        // Nothing is left queued: the poll that just began covers them all.
        let more = tokio::time::timeout(Duration::from_secs(60), p.next()).await;
        assert!(more.is_err(), "a third poll for one burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_wait_keeps_its_poke() {
        let (mut p, trigger, _) = pace();
        trigger.notify_one();
        p.next().await;
        trigger.notify_one();
        let cut = tokio::time::timeout(MIN_GAP / 4, p.next()).await;
        assert!(cut.is_err());
        let t0 = Instant::now();
        p.next().await;
        assert_eq!(t0.elapsed(), MIN_GAP - MIN_GAP / 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_is_not_paced() {
        let (mut p, trigger, stop) = pace();
        trigger.notify_one();
        p.next().await;
        let t0 = Instant::now();
        stop.store(true, Ordering::SeqCst);
        trigger.notify_one();
        p.next().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
    }
}
