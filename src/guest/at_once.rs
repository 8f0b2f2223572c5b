//! Looks at many guests at once, where each look may wait on something of
//! its guest's own (an overlay daemon that does not answer).

use crate::sys::held_log;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `look` of every item of `items`, in their order, by up to `threads`
/// threads at once (this one among them). The mount table is read once for
/// all their looks ([`crate::fs::mountinfo::with_one_read`]). A thread that
/// cannot be started (a pids limit) leaves its share to the others. What a
/// look logs goes out in the items' order too, each item's once every
/// earlier one's has.
pub fn each<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    look: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    use crate::fs::mountinfo;
    let next = AtomicUsize::new(0);
    let logs = Mutex::new(InOrder::default());
    // The next item not taken yet, until none is left: (index, answer).
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            let (answer, lines) = held_log::held(|| look(item));
            logs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .done(i, lines);
            done.push((i, answer));
        }
    };
    let others = threads.min(items.len()).saturating_sub(1);
    // This thread's table for all (its caller's, if it read one already).
    let table = (others > 0).then(mountinfo::read).and_then(Result::ok);
    let mut answers: Vec<(usize, R)> = std::thread::scope(|s| {
        let others: Vec<_> = (0..others)
            .map_while(|_| {
                let table = table.clone();
                let work = || match table {
                    Some(t) => mountinfo::with_table(t, work),
                    None => mountinfo::with_one_read(work),
                };
                std::thread::Builder::new().spawn_scoped(s, work).ok()
            })
            .collect();
        let mut answers = mountinfo::with_one_read(work);
        for t in others {
            // A look that panicked: as if it had in this thread.
            answers.extend(t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        answers
    });
    answers.sort_unstable_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, r)| r).collect()
}

/// The looks' log lines, written in their items' order.
#[derive(Default)]
struct InOrder {
    /// The first item whose lines are not written yet.
    next: usize,
    /// Lines of later items, done before it.
    waiting: BTreeMap<usize, Vec<u8>>,
}

impl InOrder {
    fn done(&mut self, i: usize, lines: Vec<u8>) {
        self.waiting.insert(i, lines);
        while let Some(lines) = self.waiting.remove(&self.next) {
            held_log::write_lines(&lines);
            self.next += 1;
        }
    }
}

impl Drop for InOrder {
    /// Lines still waiting for an earlier look that never ended (its
    /// thread panicked): out in order all the same.
    fn drop(&mut self) {
        for lines in std::mem::take(&mut self.waiting).into_values() {
            held_log::write_lines(&lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_item_in_order() {
        let items: Vec<u32> = (0..100).collect();
        for threads in [0, 1, 3, 16, 200] {
            assert_eq!(
                each(&items, threads, |i| i * 2),
                (0..100).map(|i| i * 2).collect::<Vec<_>>()
            );
        }
        assert!(each(&[] as &[u32], 4, |i| *i).is_empty());
    }

    #[test]
    fn looks_run_at_once() {
        // Each look waits for all the others to have begun: done only if
        // they run together.
        let begun = AtomicUsize::new(0);
        let items = [(); 4];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let all = each(&items, 4, |_| {
            begun.fetch_add(1, Ordering::SeqCst);
            while begun.load(Ordering::SeqCst) < 4 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            begun.load(Ordering::SeqCst)
        });
        assert_eq!(all, [4; 4]);
    }
}
