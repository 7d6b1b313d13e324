//! Text runs that remember their events: for a client format that renders one event per upstream
//! event (the Responses stream translated from another API), the scanner's per-event text runs
//! of a read are merged into one run per block, with the byte offsets where each event's fragment
//! ends. The answer is assembled from one string per read, and the client's events are written
//! from the offsets (responses_sse.rs) without one Python object per event.

use crate::scan::{Item, RunKind};

/// One unit of output, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunItem {
    /// A scanner item as it came (rare events, thinking and argument runs, usage, and text runs
    /// of a single event).
    Item(Item),
    /// The text fragments of two or more consecutive events for block `key`: their concatenation
    /// and, per event, the UTF-8 byte offset in `text` where its fragment ends.
    Text {
        key: i64,
        text: String,
        ends: Vec<u32>,
    },
}

/// Merges consecutive text runs of one block (the scanner's items without merging: one run per
/// event). A usage run between them is held back and handed on before the next other item, as the
/// merging scanner does: each usage object replaces the one before, so only where it lands moves.
pub fn merge_text(items: Vec<Item>) -> Vec<RunItem> {
    let mut out: Vec<RunItem> = Vec::with_capacity(items.len());
    let mut usage: Option<Item> = None;
    for item in items {
        match item {
            Item::Run {
                kind: RunKind::Text,
                key,
                text,
            } => append_text(&mut out, &mut usage, key, text),
            usage_run @ Item::Run {
                kind: RunKind::Usage,
                ..
            } if in_text_run(&out) => usage = Some(usage_run),
            other => {
                out.extend(usage.take().map(RunItem::Item));
                out.push(RunItem::Item(other));
            }
        }
    }
    out.extend(usage.map(RunItem::Item));
    out
}

fn in_text_run(out: &[RunItem]) -> bool {
    matches!(
        out.last(),
        Some(RunItem::Text { .. })
            | Some(RunItem::Item(Item::Run {
                kind: RunKind::Text,
                ..
            }))
    )
}

fn append_text(out: &mut Vec<RunItem>, usage: &mut Option<Item>, key: i64, text: String) {
    match out.last_mut() {
        Some(RunItem::Text {
            key: last,
            text: run,
            ends,
        }) if *last == key => {
            run.push_str(&text);
            ends.push(run.len() as u32);
        }
        Some(RunItem::Item(Item::Run {
            kind: RunKind::Text,
            key: last,
            text: first,
        })) if *last == key => {
            let first = std::mem::take(first);
            let mut run = first;
            let first_end = run.len() as u32;
            run.push_str(&text);
            let end = run.len() as u32;
            *out.last_mut().expect("checked above") = RunItem::Text {
                key,
                text: run,
                ends: vec![first_end, end],
            };
        }
        _ => {
            out.extend(usage.take().map(RunItem::Item));
            out.push(RunItem::Item(Item::Run {
                kind: RunKind::Text,
                key,
                text,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::tests::{event, run};

    #[test]
    fn consecutive_text_of_one_block_is_one_run_with_its_event_ends() {
        let items = vec![
            event("first"),
            run(RunKind::Text, 0, "Hé"),
            run(RunKind::Text, 0, ""),
            run(RunKind::Text, 0, " wörld"),
            run(RunKind::Text, 1, "x"),
            run(RunKind::Thinking, 1, "t"),
        ];
        assert_eq!(
            merge_text(items),
            vec![
                RunItem::Item(event("first")),
                RunItem::Text {
                    key: 0,
                    text: "Hé wörld".into(),
                    ends: vec![3, 3, 10]
                },
                RunItem::Item(run(RunKind::Text, 1, "x")),
                RunItem::Item(run(RunKind::Thinking, 1, "t")),
            ]
        );
    }

    #[test]
    fn usage_between_text_moves_after_the_run_and_only_there() {
        let usage = |n: &str| run(RunKind::Usage, 0, n);
        let items = vec![
            usage("0"),
            run(RunKind::Text, 0, "a"),
            usage("1"),
            run(RunKind::Text, 0, "b"),
            usage("2"),
            event("stop"),
            run(RunKind::Text, 0, "c"),
            usage("3"),
        ];
        assert_eq!(
            merge_text(items),
            vec![
                RunItem::Item(usage("0")),
                RunItem::Text {
                    key: 0,
                    text: "ab".into(),
                    ends: vec![1, 2]
                },
                RunItem::Item(usage("2")),
                RunItem::Item(event("stop")),
                RunItem::Item(run(RunKind::Text, 0, "c")),
                RunItem::Item(usage("3")),
            ]
        );
    }
}
