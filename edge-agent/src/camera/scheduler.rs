//! Fair scheduling of frames onto the one shared detector.
//!
//! [`FairQueue`] (pure) holds at most `per_camera` frames for each camera and hands them out
//! round-robin, so a camera with many frames never starves the others. Full policy: drop-oldest
//! per camera; each dropped frame is counted for its camera with reason `superseded` (a newer
//! frame of the same camera replaced it). The queue therefore never holds more than
//! cameras × `per_camera` frames.
//!
//! [`DetectorQueue`] wraps it for the camera threads (producers) and the detector thread (the
//! consumer): a mutex held only for a push or pop, and two condition variables (a frame is
//! ready; a camera's queue has room). A camera whose source can wait (a file) uses
//! [`DetectorQueue::push_wait`] and is held back instead of superseding frames. It must not run
//! inference or hold its lock while anything blocks.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Per-camera bounded queues served round-robin.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: Vec<VecDeque<T>>,
    per_camera: usize,
    next: usize,
}

impl<T> FairQueue<T> {
    /// A queue for `cameras` cameras holding up to `per_camera` items each (at least 1).
    pub fn new(cameras: usize, per_camera: usize) -> Self {
        FairQueue {
            queues: (0..cameras).map(|_| VecDeque::new()).collect(),
            per_camera: per_camera.max(1),
            next: 0,
        }
    }

    /// Queues `item` for `camera`; returns the item dropped to make room (the camera's oldest),
    /// or the item itself for an unknown camera.
    pub fn push(&mut self, camera: usize, item: T) -> Option<T> {
        let Some(queue) = self.queues.get_mut(camera) else {
            return Some(item);
        };
        let dropped = (queue.len() >= self.per_camera)
            .then(|| queue.pop_front())
            .flatten();
        queue.push_back(item);
        dropped
    }

    /// The next item, taking cameras in turn.
    pub fn pop(&mut self) -> Option<(usize, T)> {
        let n = self.queues.len();
        for k in 0..n {
            let camera = (self.next + k) % n;
            if let Some(item) = self.queues[camera].pop_front() {
                self.next = (camera + 1) % n;
                return Some((camera, item));
            }
        }
        None
    }

    /// Items waiting, all cameras together.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Whether `camera`'s queue is full (an unknown camera's never is).
    pub fn is_full(&self, camera: usize) -> bool {
        self.queues
            .get(camera)
            .is_some_and(|q| q.len() >= self.per_camera)
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shared queue between camera threads and the detector thread.
#[derive(Debug)]
pub struct DetectorQueue<T> {
    queue: Mutex<FairQueue<T>>,
    ready: Condvar,
    room: Condvar,
    closed: AtomicBool,
}

impl<T> DetectorQueue<T> {
    /// A queue for `cameras` cameras, `per_camera` frames each.
    pub fn new(cameras: usize, per_camera: usize) -> Self {
        DetectorQueue {
            queue: Mutex::new(FairQueue::new(cameras, per_camera)),
            ready: Condvar::new(),
            room: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a frame; returns the one it superseded, if any.
    pub fn push(&self, camera: usize, item: T) -> Option<T> {
        let dropped = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(camera, item);
        self.ready.notify_one();
        dropped
    }

    /// Queues a frame, waiting while the camera's queue is full, so nothing is superseded.
    /// Checks `give_up` every `tick` while it waits; returns the item when it gives up or the
    /// queue is closed.
    pub fn push_wait(
        &self,
        camera: usize,
        item: T,
        tick: Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<(), T> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while queue.is_full(camera) {
            if give_up() || self.closed.load(Ordering::Acquire) {
                return Err(item);
            }
            queue = self
                .room
                .wait_timeout(queue, tick)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        // invariant: not full, so nothing is dropped.
        let dropped = queue.push(camera, item);
        drop(queue);
        self.ready.notify_one();
        match dropped {
            Some(item) => Err(item),
            None => Ok(()),
        }
    }

    /// Waits up to `timeout` for a frame. `None` on timeout or once closed and empty.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<(usize, T)> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(item) = queue.pop() {
            drop(queue);
            self.room.notify_all();
            return Some(item);
        }
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let (mut queue, _) = self
            .ready
            .wait_timeout(queue, timeout)
            .unwrap_or_else(|p| p.into_inner());
        let item = queue.pop();
        drop(queue);
        if item.is_some() {
            self.room.notify_all();
        }
        item
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the consumer for shutdown.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_camera_does_not_starve_the_others() {
        let mut q = FairQueue::new(3, 4);
        for i in 0..4 {
            q.push(0, format!("a{i}"));
        }
        q.push(1, "b0".to_owned());
        q.push(2, "c0".to_owned());
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|(_, s)| s)).collect();
        assert_eq!(order, ["a0", "b0", "c0", "a1", "a2", "a3"]);
    }

    #[test]
    fn a_full_camera_queue_drops_its_oldest_frame() {
        let mut q = FairQueue::new(2, 2);
        assert_eq!(q.push(0, 1), None);
        assert_eq!(q.push(0, 2), None);
        assert_eq!(q.push(0, 3), Some(1));
        assert_eq!(q.push(1, 10), None);
        assert_eq!(q.len(), 3);
        assert_eq!(q.push(7, 99), Some(99), "unknown camera");
    }

    #[test]
    fn a_waiting_push_is_held_until_the_detector_takes_a_frame_and_gives_up_on_close() {
        let q = std::sync::Arc::new(DetectorQueue::new(1, 1));
        q.push(0, 1);
        // `give_up` is asked only while the push waits for room: it tells the test so.
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pusher = {
            let (q, waiting) = (std::sync::Arc::clone(&q), std::sync::Arc::clone(&waiting));
            std::thread::spawn(move || {
                q.push_wait(0, 2, Duration::from_millis(10), || {
                    waiting.store(true, Ordering::Release);
                    false
                })
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !waiting.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline && !pusher.is_finished(),
                "the push did not wait for room"
            );
            std::thread::yield_now();
        }
        // The pusher waits for room; taking frame 1 lets frame 2 in, nothing superseded.
        assert_eq!(q.pop_timeout(Duration::from_secs(10)), Some((0, 1)));
        assert_eq!(pusher.join().unwrap(), Ok(()));
        assert_eq!(q.pop_timeout(Duration::from_secs(10)), Some((0, 2)));
        q.push(0, 3);
        let give_up = std::sync::atomic::AtomicBool::new(false);
        let held = std::thread::scope(|s| {
            let h = s.spawn(|| {
                q.push_wait(0, 4, Duration::from_millis(10), || {
                    give_up.load(Ordering::Relaxed)
                })
            });
            give_up.store(true, Ordering::Relaxed);
            h.join().unwrap()
        });
        assert_eq!(held, Err(4), "a cancelled wait hands the frame back");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_closed_empty_queue_returns_at_once() {
        let q: DetectorQueue<u8> = DetectorQueue::new(1, 1);
        q.close();
        assert_eq!(q.pop_timeout(Duration::from_secs(60)), None);
        q.push(0, 5);
        assert_eq!(q.pop_timeout(Duration::from_secs(60)), Some((0, 5)));
    }
}
