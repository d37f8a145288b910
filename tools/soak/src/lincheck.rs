//! The linearizability checker: is the history of one key (puts, deletes,
//! compare-and-sets, linearizable reads) explainable by a single register that
//! applies each operation atomically at some instant between its invocation
//! and its completion?
//!
//! The algorithm is Wing & Gong's search with Lowe's memoization (the one
//! Porcupine and Knossos' "wgl" use): walk the history's events in time
//! order, linearize any call whose operation the register model accepts,
//! backtrack at a return whose operation is still unplaced, and never visit
//! the same (set of linearized operations, register value) twice. Keys are
//! independent (P-compositionality), so each key is checked on its own.
//!
//! Why not stateright's `LinearizabilityTester`: it models unknown outcomes
//! correctly (an operation left in flight may be linearized or not), and the
//! unit tests below cross-check this checker against it on thousands of small
//! random histories. But its search has no memoization and clones its partial
//! order at every step, so a non-linearizable history of a few hundred
//! overlapping operations (what one key of a soak holds) takes exponential
//! time: the soak could not give a verdict exactly when it matters.
//!
//! Unknown outcomes (504, timeout, connection cut after sending) are treated
//! as a checker should: such an operation may take effect at any instant after
//! its invocation, or never. It gets no return event (it is concurrent with
//! everything after it), its output is unconstrained, and the search succeeds
//! as soon as every operation with a known outcome is placed. Operations that
//! definitely did not happen (503, 4xx) and reads without an answer are left
//! out by the caller.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt;

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    Put(String),
    Delete,
    /// `expect: None` means "absent"; `value: None` means "delete".
    Cas {
        expect: Option<String>,
        value: Option<String>,
    },
    Get,
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// No answer, or an answer that does not say whether it happened.
    Unknown,
    /// A put or delete was acknowledged.
    Written,
    /// A CAS was answered: whether it swapped, and the value after it
    /// (`None` when the history does not record it).
    Cas { ok: bool, current: Option<Option<String>> },
    /// A linearizable read returned this (`None`: absent).
    Read(Option<String>),
}

/// One operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u32,
    pub input: Input,
    pub output: Output,
    /// Nanoseconds on one monotonic clock.
    pub invoke: u64,
    /// `None`: outcome unknown (may have taken effect any time after
    /// `invoke`, or never).
    pub complete: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.as_deref().map(|s| format!("{s:?}")).unwrap_or_else(|| "null".into());
        match &self.input {
            Input::Put(v) => write!(f, "put {v:?}")?,
            Input::Delete => write!(f, "delete")?,
            Input::Cas { expect, value } => write!(f, "cas {} -> {}", show(expect), show(value))?,
            Input::Get => write!(f, "get")?,
        }
        match &self.output {
            Output::Unknown => write!(f, " = unknown")?,
            Output::Written => write!(f, " = ok")?,
            Output::Cas { ok, current } => {
                write!(f, " = {}", if *ok { "swapped" } else { "not swapped" })?;
                if let Some(c) = current {
                    write!(f, ", current {}", show(c))?;
                }
            }
            Output::Read(v) => write!(f, " = {}", show(v))?,
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        match self.complete {
            Some(c) => write!(f, " (client {}, {:.1}..{:.1} ms)", self.client, ms(self.invoke), ms(c)),
            None => write!(
                f,
                " (client {}, from {:.1} ms, never answered)",
                self.client,
                ms(self.invoke)
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck` is the operation the deepest
    /// attempt could not place before it had to have happened.
    NotLinearizable {
        stuck: String,
        placed: usize,
        required: usize,
    },
    /// The search gave up after `budget` distinct states.
    Undecided {
        budget: usize,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => write!(f, "linearizable"),
            Verdict::NotLinearizable {
                stuck,
                placed,
                required,
            } => write!(
                f,
                "NOT linearizable: the longest valid order places {placed} of {required} answered operations, \
                 then cannot place {stuck}"
            ),
            Verdict::Undecided { budget } => write!(f, "undecided: search budget of {budget} states exhausted"),
        }
    }
}

/// Default bound on distinct search states per key.
pub const DEFAULT_BUDGET: usize = 2_000_000;

/// Register value during the search: 0 is "absent", others index `Interner`.
type Val = u32;
const ABSENT: Val = 0;

#[derive(Default)]
struct Interner(HashMap<String, Val>);

impl Interner {
    fn id(&mut self, v: &Option<String>) -> Val {
        match v {
            None => ABSENT,
            Some(s) => {
                let next = self.0.len() as Val + 1;
                *self.0.entry(s.clone()).or_insert(next)
            }
        }
    }
}

/// An operation with its values interned.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Step {
    Put(Val),
    Cas {
        expect: Val,
        value: Val,
        outcome: Option<(bool, Option<Val>)>,
    },
    Get(Val),
}

/// The register model: the value after `step` from `state`, or `None` if the
/// step's recorded output is impossible from `state`. A put with an unknown
/// outcome is just a put here: "never happened" is the search not placing it.
fn apply(state: Val, step: Step) -> Option<Val> {
    match step {
        Step::Put(v) => Some(v),
        Step::Get(v) => (state == v).then_some(state),
        Step::Cas {
            expect,
            value,
            outcome: None,
        } => Some(if state == expect { value } else { state }),
        Step::Cas {
            expect,
            value,
            outcome: Some((true, current)),
        } => (state == expect && current.is_none_or(|c| c == value)).then_some(value),
        Step::Cas {
            expect,
            outcome: Some((false, current)),
            ..
        } => (state != expect && current.is_none_or(|c| c == state)).then_some(state),
    }
}

/// Drops unknown-outcome writes that can never help explain the history: a
/// put (or swap) of a value that nobody ever observed. Placing one sets the
/// register to a value no later read, CAS answer or CAS expectation shows, so
/// any order that places it works as well without it. This keeps the number
/// of "maybe" operations, the search's only real branching, small. It is only
/// sound when every answered CAS records its current value (a bare "not
/// swapped" could be explained by an unobserved value), so it is skipped
/// otherwise.
fn prune_unobserved(ops: &[Operation]) -> Vec<&Operation> {
    let all_cas_recorded = ops.iter().all(|o| {
        !matches!(
            o.output,
            Output::Cas {
                ok: false,
                current: None
            }
        )
    });
    if !all_cas_recorded {
        return ops.iter().collect();
    }
    let mut observed: HashSet<&str> = HashSet::new();
    for o in ops {
        if let Input::Cas { expect: Some(e), .. } = &o.input {
            observed.insert(e);
        }
        match &o.output {
            Output::Read(Some(v)) => {
                observed.insert(v);
            }
            Output::Cas {
                current: Some(Some(v)), ..
            } => {
                observed.insert(v);
            }
            _ => {}
        }
    }
    ops.iter()
        .filter(|o| {
            if o.complete.is_some() {
                return true;
            }
            match &o.input {
                Input::Put(v) => observed.contains(v.as_str()),
                Input::Cas { value: Some(v), .. } => observed.contains(v.as_str()),
                _ => true,
            }
        })
        .collect()
}

const NIL: usize = usize::MAX;

/// Checks one key's history. `budget` bounds the number of distinct search
/// states (memory and time); see [`DEFAULT_BUDGET`].
pub fn check(ops: &[Operation], budget: usize) -> Verdict {
    let ops = prune_unobserved(ops);
    let mut interner = Interner::default();
    let steps: Vec<Step> = ops
        .iter()
        .map(|o| match (&o.input, &o.output) {
            (Input::Put(v), _) => Step::Put(interner.id(&Some(v.clone()))),
            (Input::Delete, _) => Step::Put(ABSENT),
            (Input::Cas { expect, value }, out) => {
                let outcome = match out {
                    Output::Cas { ok, current } => Some((*ok, current.as_ref().map(|c| interner.id(c)))),
                    _ => None,
                };
                Step::Cas {
                    expect: interner.id(expect),
                    value: interner.id(value),
                    outcome,
                }
            }
            (Input::Get, Output::Read(v)) => Step::Get(interner.id(v)),
            // A read without an answer says nothing; it is placed anywhere.
            (Input::Get, _) => Step::Cas {
                expect: ABSENT,
                value: ABSENT,
                outcome: None,
            },
        })
        .collect();
    let n = ops.len();
    // Symmetry: unknown-outcome operations with the same effect (say, twenty
    // unanswered deletes) are interchangeable, and any set of k of them that
    // fits a valid order can be swapped for the k invoked first. So each is
    // placed only after the previous one of its kind: the search then tracks
    // how many of a kind happened, not which, and stays polynomial in them.
    let mut after_same = vec![NIL; n];
    {
        let mut by_invoke: Vec<usize> = (0..n).filter(|&i| ops[i].complete.is_none()).collect();
        by_invoke.sort_by_key(|&i| (ops[i].invoke, i));
        let mut last_of: HashMap<Step, usize> = HashMap::new();
        for i in by_invoke {
            if let Some(p) = last_of.insert(steps[i], i) {
                after_same[i] = p;
            }
        }
    }
    let placed_already = |lin: &[u64], i: usize| lin[i / 64] & (1 << (i % 64)) != 0;
    let required_total = ops.iter().filter(|o| o.complete.is_some()).count();

    // Events: call of op i is entry 2i, its return 2i+1; the list head is 2n.
    // Sorted by time, calls before returns at equal times (the permissive
    // reading of a tie). Unknown outcomes return "at infinity".
    let mut order: Vec<usize> = (0..2 * n).collect();
    let key = |e: usize| {
        let o = &ops[e / 2];
        if e.is_multiple_of(2) {
            (o.invoke, 0u8)
        } else {
            (o.complete.unwrap_or(u64::MAX).max(o.invoke), 1u8)
        }
    };
    order.sort_by_key(|&e| key(e));
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &e in &order {
        next[last] = e;
        prev[e] = last;
        last = e;
    }

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Val)> = HashSet::new();
    let mut stack: Vec<(usize, Val)> = Vec::new();
    let mut state: Val = ABSENT;
    let mut required_left = required_total;
    let mut deepest = (0usize, NIL);

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [e, e + 1] {
            let (p, nx) = (prev[x], next[x]);
            next[p] = nx;
            if nx != NIL {
                prev[nx] = p;
            }
        }
    };
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        for x in [e + 1, e] {
            let (p, nx) = (prev[x], next[x]);
            next[p] = x;
            if nx != NIL {
                prev[nx] = x;
            }
        }
    };

    let mut entry = next[head];
    loop {
        if required_left == 0 {
            return Verdict::Linearizable;
        }
        if entry != NIL && entry.is_multiple_of(2) {
            let i = entry / 2;
            let in_turn = after_same[i] == NIL || placed_already(&linearized, after_same[i]);
            if let Some(new_state) = apply(state, steps[i]).filter(|_| in_turn) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    if cache.len() > budget {
                        return Verdict::Undecided { budget };
                    }
                    stack.push((entry, state));
                    state = new_state;
                    if ops[i].complete.is_some() {
                        required_left -= 1;
                    }
                    lift(&mut next, &mut prev, entry);
                    entry = next[head];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = next[entry];
        } else {
            // A return (or the end) reached with its operation unplaced.
            let placed = required_total - required_left;
            if placed >= deepest.0 && entry != NIL {
                deepest = (placed, entry / 2);
            }
            let Some((e, s)) = stack.pop() else {
                let stuck = match deepest.1 {
                    NIL => "an operation".to_string(),
                    i => ops[i].to_string(),
                };
                return Verdict::NotLinearizable {
                    stuck,
                    placed: deepest.0,
                    required: required_total,
                };
            };
            let i = e / 2;
            state = s;
            linearized[i / 64] &= !(1 << (i % 64));
            if ops[i].complete.is_some() {
                required_left += 1;
            }
            unlift(&mut next, &mut prev, e);
            entry = next[e];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u32, v: &str, invoke: u64, complete: Option<u64>) -> Operation {
        Operation {
            client,
            input: Input::Put(v.into()),
            output: if complete.is_some() {
                Output::Written
            } else {
                Output::Unknown
            },
            invoke,
            complete,
        }
    }

    fn get(client: u32, read: Option<&str>, invoke: u64, complete: u64) -> Operation {
        Operation {
            client,
            input: Input::Get,
            output: Output::Read(read.map(str::to_string)),
            invoke,
            complete: Some(complete),
        }
    }

    fn cas(client: u32, expect: Option<&str>, value: Option<&str>, ok: bool, current: Option<&str>) -> Operation {
        Operation {
            client,
            input: Input::Cas {
                expect: expect.map(str::to_string),
                value: value.map(str::to_string),
            },
            output: Output::Cas {
                ok,
                current: Some(current.map(str::to_string)),
            },
            invoke: 0,
            complete: Some(0),
        }
    }

    fn at(mut op: Operation, invoke: u64, complete: u64) -> Operation {
        op.invoke = invoke;
        op.complete = Some(complete);
        op
    }

    fn verdict(ops: &[Operation]) -> Verdict {
        check(ops, DEFAULT_BUDGET)
    }

    #[test]
    fn linearizable_history_passes() {
        let h = vec![
            put(1, "a", 0, Some(10)),
            get(2, Some("a"), 5, 15), // concurrent with the put: may see it
            put(2, "b", 20, Some(30)),
            get(1, Some("a"), 21, 22), // overlaps put b, which lands later
            get(1, Some("b"), 31, 35),
            at(cas(3, Some("b"), Some("c"), true, Some("c")), 36, 40),
            at(cas(1, Some("b"), Some("d"), false, Some("c")), 41, 45),
            at(
                Operation {
                    client: 2,
                    input: Input::Delete,
                    output: Output::Written,
                    invoke: 0,
                    complete: None,
                },
                46,
                50,
            ),
            get(3, None, 51, 52),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_disagree_only_in_order() {
        // Two reads overlapping a write: one sees old, one new; fine either way.
        let h = vec![
            put(1, "a", 0, Some(1)),
            put(1, "b", 10, Some(40)),
            get(2, Some("b"), 12, 20),
            get(3, Some("a"), 15, 25),
        ];
        // get(3) completes after get(2) started but they overlap: a, then b? No:
        // get(2) saw b before get(3) (which started earlier than get 2 ended)
        // saw a; the order a(3), b(2) works since they overlap.
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // But a read that starts after another read saw "b" cannot see "a".
        let h = vec![
            put(1, "a", 0, Some(1)),
            put(1, "b", 10, Some(40)),
            get(2, Some("b"), 12, 20),
            get(3, Some("a"), 21, 25),
        ];
        assert!(!verdict(&h).is_linearizable());
    }

    #[test]
    fn stale_read_after_acknowledged_write_fails() {
        let h = vec![
            put(1, "a", 0, Some(10)),
            put(1, "b", 20, Some(30)),
            get(2, Some("a"), 40, 50), // b was acknowledged before this read began
        ];
        let v = verdict(&h);
        assert!(matches!(v, Verdict::NotLinearizable { .. }), "{v}");
        assert!(v.to_string().contains("get"), "{v}");
    }

    #[test]
    fn lost_acknowledged_write_fails() {
        let h = vec![put(1, "a", 0, Some(10)), get(2, None, 20, 30)];
        assert!(!verdict(&h).is_linearizable());
        // Lost, then "found" again: still not linearizable.
        let h = vec![
            put(1, "a", 0, Some(10)),
            get(2, None, 20, 30),
            get(2, Some("a"), 40, 50),
        ];
        assert!(!verdict(&h).is_linearizable());
    }

    #[test]
    fn unknown_write_may_or_may_not_have_happened() {
        // It happened (seen late, long after its invocation).
        let h = vec![
            put(1, "a", 0, Some(10)),
            put(2, "x", 20, None),
            get(3, Some("x"), 500, 510),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // It did not happen.
        let h = vec![
            put(1, "a", 0, Some(10)),
            put(2, "x", 20, None),
            get(3, Some("a"), 500, 510),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // It happened after a read that did not see it.
        let h = vec![
            put(1, "a", 0, Some(10)),
            put(2, "x", 20, None),
            get(3, Some("a"), 500, 510),
            get(3, Some("x"), 600, 610),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // But it cannot have happened before it was invoked.
        let h = vec![
            put(1, "a", 0, Some(10)),
            get(3, Some("x"), 12, 15),
            put(2, "x", 20, None),
        ];
        assert!(!verdict(&h).is_linearizable());
        // Nor twice: once overwritten by an acknowledged write, it stays gone.
        let h = vec![
            put(2, "x", 20, None),
            get(3, Some("x"), 30, 31),
            put(1, "b", 40, Some(50)),
            get(3, Some("x"), 60, 61),
        ];
        assert!(!verdict(&h).is_linearizable());
    }

    #[test]
    fn unknown_delete_and_cas() {
        let del = Operation {
            client: 2,
            input: Input::Delete,
            output: Output::Unknown,
            invoke: 20,
            complete: None,
        };
        let h = vec![put(1, "a", 0, Some(10)), del.clone(), get(3, None, 30, 40)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let h = vec![put(1, "a", 0, Some(10)), del, get(3, Some("a"), 30, 40)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let unknown_cas = Operation {
            client: 2,
            input: Input::Cas {
                expect: Some("a".into()),
                value: Some("c".into()),
            },
            output: Output::Unknown,
            invoke: 20,
            complete: None,
        };
        let h = vec![put(1, "a", 0, Some(10)), unknown_cas.clone(), get(3, Some("c"), 30, 40)];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // The swap can only happen from "a": after "b" is written, no "c".
        let h = vec![put(1, "b", 0, Some(10)), unknown_cas, get(3, Some("c"), 30, 40)];
        assert!(!verdict(&h).is_linearizable());
    }

    #[test]
    fn cas_answers_are_checked() {
        // Swapped although the value was different.
        let h = vec![
            put(1, "a", 0, Some(10)),
            at(cas(2, Some("z"), Some("c"), true, Some("c")), 20, 30),
        ];
        assert!(!verdict(&h).is_linearizable());
        // Refused although the value matched.
        let h = vec![
            put(1, "a", 0, Some(10)),
            at(cas(2, Some("a"), Some("c"), false, Some("a")), 20, 30),
        ];
        assert!(!verdict(&h).is_linearizable());
        // Refused, reporting the wrong current value.
        let h = vec![
            put(1, "a", 0, Some(10)),
            at(cas(2, Some("z"), Some("c"), false, Some("q")), 20, 30),
        ];
        assert!(!verdict(&h).is_linearizable());
        // Create-if-absent on an empty key.
        let h = vec![
            at(cas(2, None, Some("c"), true, Some("c")), 20, 30),
            get(1, Some("c"), 40, 41),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn many_overlapping_unknowns_stay_fast() {
        // 40 unknown deletes and puts all overlapping many answered ops: the
        // memoized search must not explode.
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(Operation {
                client: 100 + i as u32,
                input: if i % 2 == 0 {
                    Input::Delete
                } else {
                    Input::Put(format!("u{i}"))
                },
                output: Output::Unknown,
                invoke: i,
                complete: None,
            });
        }
        for i in 0..200u64 {
            h.push(put(1, &format!("v{i}"), 100 + 10 * i, Some(105 + 10 * i)));
            h.push(get(2, Some(&format!("v{i}")), 106 + 10 * i, 107 + 10 * i));
        }
        // One unknown put is observed, in the middle: it happened there.
        h.push(get(3, Some("u1"), 1000, 1001));
        let start = std::time::Instant::now();
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // An overwritten acknowledged value read at the end: the search has to
        // exhaust every placement of the unknowns to say no.
        h.push(get(4, Some("v0"), 5000, 5001));
        assert!(matches!(verdict(&h), Verdict::NotLinearizable { .. }));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }

    // ---- cross-check against stateright's tester on small random histories

    use stateright::semantics::ConsistencyTester;
    use stateright::semantics::LinearizabilityTester;
    use stateright::semantics::SequentialSpec;

    #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
    struct Reg(Option<String>);

    impl SequentialSpec for Reg {
        type Op = Input;
        type Ret = Output;
        fn invoke(&mut self, op: &Input) -> Output {
            match op {
                Input::Put(v) => {
                    self.0 = Some(v.clone());
                    Output::Written
                }
                Input::Delete => {
                    self.0 = None;
                    Output::Written
                }
                Input::Cas { expect, value } => {
                    let ok = self.0 == *expect;
                    if ok {
                        self.0 = value.clone();
                    }
                    Output::Cas {
                        ok,
                        current: Some(self.0.clone()),
                    }
                }
                Input::Get => Output::Read(self.0.clone()),
            }
        }
        fn is_valid_step(&mut self, op: &Input, ret: &Output) -> bool {
            match (op, ret) {
                (Input::Put(_) | Input::Delete, Output::Written) => {
                    self.invoke(op);
                    true
                }
                _ => self.invoke(op) == *ret,
            }
        }
    }

    struct Rand(u64);
    impl Rand {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        }
    }

    /// A random history over values {a, b, absent}: random ops, random
    /// interleaving, random (often wrong) answers, some never answered.
    fn random_history(rng: &mut Rand) -> Vec<Operation> {
        let val = |rng: &mut Rand| match rng.below(3) {
            0 => None,
            1 => Some("a".to_string()),
            _ => Some("b".to_string()),
        };
        let threads = 3;
        let mut pending: Vec<Option<usize>> = vec![None; threads];
        let mut left = vec![1 + rng.below(3); threads];
        let mut ops: Vec<Operation> = Vec::new();
        let mut t = 0u64;
        while left.iter().any(|l| *l > 0) || pending.iter().any(Option::is_some) {
            let th = rng.below(threads as u64) as usize;
            t += 1;
            match pending[th].take() {
                None if left[th] > 0 => {
                    left[th] -= 1;
                    let input = match rng.below(4) {
                        0 => Input::Put(val(rng).unwrap_or_else(|| "a".into())),
                        1 => Input::Delete,
                        2 => Input::Cas {
                            expect: val(rng),
                            value: val(rng),
                        },
                        _ => Input::Get,
                    };
                    ops.push(Operation {
                        client: th as u32,
                        input,
                        output: Output::Unknown,
                        invoke: t,
                        complete: None,
                    });
                    pending[th] = Some(ops.len() - 1);
                }
                None => {}
                Some(i) => {
                    if !matches!(ops[i].input, Input::Get) && rng.below(5) == 0 {
                        continue; // never answered; the client moves on
                    }
                    ops[i].output = match ops[i].input {
                        Input::Put(_) | Input::Delete => Output::Written,
                        Input::Cas { .. } => Output::Cas {
                            ok: rng.below(2) == 0,
                            current: Some(val(rng)),
                        },
                        Input::Get => Output::Read(val(rng)),
                    };
                    ops[i].complete = Some(t);
                }
            }
        }
        ops
    }

    /// The same history fed to stateright. It allows one operation in flight
    /// per thread, so each unanswered one gets a thread of its own, left in
    /// flight forever (which stateright treats as "may or may not happen").
    fn stateright_says(ops: &[Operation]) -> bool {
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            events.push((o.invoke, false, i));
            if let Some(c) = o.complete {
                events.push((c, true, i));
            }
        }
        events.sort();
        let thread = |i: usize| match ops[i].complete {
            Some(_) => ops[i].client,
            None => 1000 + i as u32,
        };
        let mut tester = LinearizabilityTester::new(Reg(None));
        for (_, is_return, i) in events {
            if is_return {
                tester.on_return(thread(i), ops[i].output.clone()).unwrap();
            } else {
                tester.on_invoke(thread(i), ops[i].input.clone()).unwrap();
            }
        }
        tester.is_consistent()
    }

    #[test]
    fn agrees_with_stateright_on_random_histories() {
        let mut rng = Rand(42);
        let (mut yes, mut no) = (0, 0);
        for round in 0..3000 {
            let ops = random_history(&mut rng);
            let expected = stateright_says(&ops);
            let got = check(&ops, DEFAULT_BUDGET);
            assert!(!matches!(got, Verdict::Undecided { .. }));
            assert_eq!(
                got.is_linearizable(),
                expected,
                "round {round}: checker says {got}, stateright says {expected}; history:\n{}",
                ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join("\n")
            );
            if expected {
                yes += 1
            } else {
                no += 1
            }
        }
        // The generator must produce both kinds for the comparison to mean much.
        assert!(yes > 300 && no > 300, "linearizable {yes}, not {no}");
    }
}
