//! Hostile return values: components built by hand (a core module in WAT plus
//! the `process-operator` world's metadata) whose `process` returns crafted
//! bytes: lengths and pointers out of bounds, misaligned lists, invalid
//! discriminants, invalid UTF-8, and ABI-valid but meaningless input indexes.
//! The host must refuse each cleanly (an error, never a panic or a hang) and
//! keep working afterwards. A bounded, seeded property loop randomises the
//! returned bytes on top of the fixed cases.
//!
//! Canonical ABI layout of what `process` returns (wit/operator.wit; sizes
//! and offsets in bytes, every list is (ptr: u32, len: u32), every string is
//! (ptr: u32, len: u32) of UTF-8 bytes):
//!
//! ```text
//! batch-result   size 16, align 4 (the return area; `process` returns its address)
//!   0  emits: list<emit>           ptr, 4 len
//!   8  errors: list<record-error>  ptr, 12 len
//! emit           size 72, align 8 (the record holds an option<s64>)
//!   0  output: variant tag u8 (0 main, 1 side)
//!   4  side(string) payload: ptr, 8 len        (payload aligned to 4)
//!   16 record (aligned to 8), size 48:
//!        16 key: option tag u8 (0 none, 1 some)
//!        20 key payload list<u8>: ptr, 24 len
//!        28 value list<u8>: ptr, 32 len
//!        40 event-time: option tag u8
//!        48 event-time payload s64             (payload aligned to 8)
//!        56 headers list<header>: ptr, 60 len
//!   64 input: u32                              (then padding to 72)
//! header         size 16, align 4
//!   0  name: ptr, 4 len;  8 value: ptr, 12 len
//! record-error   size 12, align 4
//!   0  input: u32;  4 message: ptr, 8 len
//! result<_, string> (init's return area) size 12, align 4: tag u8 at 0 (0 ok)
//! ```
//!
//! The component's `process` returns the address of a valid result when it
//! is called with an empty batch and that of the crafted one otherwise, so a
//! test can show the host (after `reset`) still lifts a good result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_runtime::{wit, CallError, InstanceConfig, Runtime};
use sluice_tests::*;
use sluice_types::metrics::Metrics;

// ---- the canonical ABI layout written out above -------------------------

const RESULT_SIZE: u32 = 16;
const R_EMITS_PTR: u32 = 0;
const R_EMITS_LEN: u32 = 4;
const R_ERRORS_PTR: u32 = 8;
const R_ERRORS_LEN: u32 = 12;

const EMIT_SIZE: u32 = 72;
const E_OUTPUT_TAG: u32 = 0;
const E_SIDE_PTR: u32 = 4;
const E_SIDE_LEN: u32 = 8;
const E_KEY_TAG: u32 = 16;
const E_KEY_PTR: u32 = 20;
const E_KEY_LEN: u32 = 24;
const E_VALUE_PTR: u32 = 28;
const E_VALUE_LEN: u32 = 32;
const E_TIME_TAG: u32 = 40;
const E_TIME: u32 = 48;
const E_HEADERS_PTR: u32 = 56;
const E_HEADERS_LEN: u32 = 60;
const E_INPUT: u32 = 64;

const HEADER_SIZE: u32 = 16;
const H_NAME_PTR: u32 = 0;
const H_NAME_LEN: u32 = 4;
const H_VALUE_PTR: u32 = 8;
const H_VALUE_LEN: u32 = 12;

const ERROR_SIZE: u32 = 12;
const ER_INPUT: u32 = 0;
const ER_MSG_PTR: u32 = 4;
const ER_MSG_LEN: u32 = 8;

// ---- the guest's memory ----------------------------------------------

/// Linear memory: 2 pages. Crafted data lives below `HEAP`, the guest's bump
/// allocator (used by the host to pass arguments) above it.
const MEM_PAGES: u32 = 2;
const MEM_SIZE: u32 = MEM_PAGES * 65536;
const HEAP: u32 = 65536;
/// Where init's return area is (zeroed: `ok`).
const INIT_RET: u32 = 8;
/// Where the valid and the crafted image start.
const VALID_BASE: u32 = 1024;
const HOSTILE_BASE: u32 = 16384;

/// The initial contents of memory below `HEAP`.
struct Mem(Vec<u8>);

impl Mem {
    fn new() -> Self {
        Mem(vec![0; HEAP as usize])
    }
    fn bytes(&mut self, at: u32, b: &[u8]) {
        self.0[at as usize..at as usize + b.len()].copy_from_slice(b);
    }
    fn u8(&mut self, at: u32, v: u8) {
        self.0[at as usize] = v;
    }
    fn u32(&mut self, at: u32, v: u32) {
        self.bytes(at, &v.to_le_bytes());
    }
    fn get_u32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.0[at as usize..at as usize + 4].try_into().unwrap())
    }
}

/// Addresses inside one image, for tests to patch.
#[derive(Clone, Copy, Debug)]
struct Image {
    ret: u32,
    /// The two emits: 0 is main with key, time and a header; 1 is side("alerts").
    emits: [u32; 2],
    header: u32,
    error: u32,
    /// Where free space for extra data starts.
    free: u32,
}

const VALUE0: &[u8] = b"hello";
const VALUE1: &[u8] = b"world";
const KEY0: &[u8] = b"k1";
const SIDE: &[u8] = b"alerts";
const HNAME: &[u8] = b"h";
const HVALUE: &[u8] = b"v";
const MESSAGE: &[u8] = b"bad input";
const TIME0: i64 = -1_700_000_000_123;

/// Write a valid result at `base` (8-aligned): two emits and one error.
fn write_valid(mem: &mut Mem, base: u32) -> Image {
    assert_eq!(base % 8, 0);
    let ret = base;
    let emits_at = base + RESULT_SIZE; // 8-aligned
    let errors_at = emits_at + 2 * EMIT_SIZE;
    let header = errors_at + ERROR_SIZE + 4; // 4-aligned
    let mut pool = header + HEADER_SIZE;
    let mut put = |mem: &mut Mem, b: &[u8]| {
        let at = pool;
        mem.bytes(at, b);
        pool += b.len() as u32;
        (at, b.len() as u32)
    };
    let key0 = put(mem, KEY0);
    let value0 = put(mem, VALUE0);
    let value1 = put(mem, VALUE1);
    let side = put(mem, SIDE);
    let hname = put(mem, HNAME);
    let hvalue = put(mem, HVALUE);
    let message = put(mem, MESSAGE);

    mem.u32(ret + R_EMITS_PTR, emits_at);
    mem.u32(ret + R_EMITS_LEN, 2);
    mem.u32(ret + R_ERRORS_PTR, errors_at);
    mem.u32(ret + R_ERRORS_LEN, 1);

    let e0 = emits_at;
    mem.u8(e0 + E_OUTPUT_TAG, 0);
    mem.u8(e0 + E_KEY_TAG, 1);
    mem.u32(e0 + E_KEY_PTR, key0.0);
    mem.u32(e0 + E_KEY_LEN, key0.1);
    mem.u32(e0 + E_VALUE_PTR, value0.0);
    mem.u32(e0 + E_VALUE_LEN, value0.1);
    mem.u8(e0 + E_TIME_TAG, 1);
    mem.bytes(e0 + E_TIME, &TIME0.to_le_bytes());
    mem.u32(e0 + E_HEADERS_PTR, header);
    mem.u32(e0 + E_HEADERS_LEN, 1);
    mem.u32(e0 + E_INPUT, 0);

    let e1 = emits_at + EMIT_SIZE;
    mem.u8(e1 + E_OUTPUT_TAG, 1);
    mem.u32(e1 + E_SIDE_PTR, side.0);
    mem.u32(e1 + E_SIDE_LEN, side.1);
    mem.u8(e1 + E_KEY_TAG, 0);
    mem.u32(e1 + E_VALUE_PTR, value1.0);
    mem.u32(e1 + E_VALUE_LEN, value1.1);
    mem.u8(e1 + E_TIME_TAG, 0);
    // An empty list may point anywhere aligned; 8 is in bounds anyway.
    mem.u32(e1 + E_HEADERS_PTR, 8);
    mem.u32(e1 + E_HEADERS_LEN, 0);
    mem.u32(e1 + E_INPUT, 0);

    mem.u32(header + H_NAME_PTR, hname.0);
    mem.u32(header + H_NAME_LEN, hname.1);
    mem.u32(header + H_VALUE_PTR, hvalue.0);
    mem.u32(header + H_VALUE_LEN, hvalue.1);

    mem.u32(errors_at + ER_INPUT, 0);
    mem.u32(errors_at + ER_MSG_PTR, message.0);
    mem.u32(errors_at + ER_MSG_LEN, message.1);

    Image {
        ret,
        emits: [e0, e1],
        header,
        error: errors_at,
        free: (pool + 7) & !7,
    }
}

/// What the valid image lifts to.
fn expected_valid() -> wit::BatchResult {
    wit::BatchResult {
        emits: vec![
            wit::Emit {
                output: wit::Output::Main,
                record: wit::Record {
                    key: Some(KEY0.to_vec()),
                    value: VALUE0.to_vec(),
                    event_time: Some(TIME0),
                    headers: vec![wit::Header {
                        name: "h".into(),
                        value: HVALUE.to_vec(),
                    }],
                },
                input: 0,
            },
            wit::Emit {
                output: wit::Output::Side("alerts".into()),
                record: wit::Record {
                    key: None,
                    value: VALUE1.to_vec(),
                    event_time: None,
                    headers: vec![],
                },
                input: 0,
            },
        ],
        errors: vec![wit::RecordError {
            input: 0,
            message: "bad input".into(),
        }],
    }
}

/// How the guest's `cabi_realloc` answers requests with an alignment above 1
/// (strings, align 1, are always served honestly so that `init` works).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Realloc {
    Honest,
    OutOfBounds,
    Misaligned,
}

/// A component image: memory contents and what `process` returns for a
/// non-empty batch.
struct Guest {
    mem: Mem,
    valid: Image,
    hostile: Image,
    hostile_ret: u32,
    realloc: Realloc,
}

impl Guest {
    /// Both images valid; tests patch `hostile`.
    fn new() -> Self {
        let mut mem = Mem::new();
        let valid = write_valid(&mut mem, VALID_BASE);
        let hostile = write_valid(&mut mem, HOSTILE_BASE);
        Guest {
            mem,
            valid,
            hostile_ret: hostile.ret,
            hostile,
            realloc: Realloc::Honest,
        }
    }

    fn wat(&self) -> String {
        let realloc_result = match self.realloc {
            Realloc::Honest => "(local.get $p)".to_string(),
            Realloc::OutOfBounds => format!("(if (result i32) (i32.gt_u (local.get $align) (i32.const 1)) (then (i32.const {})) (else (local.get $p)))", 0xffff_ff00u32 as i32),
            Realloc::Misaligned => "(if (result i32) (i32.gt_u (local.get $align) (i32.const 1)) (then (i32.add (local.get $p) (i32.const 1))) (else (local.get $p)))".to_string(),
        };
        // One data segment from VALID_BASE up to the last non-zero byte.
        let end = self
            .mem
            .0
            .iter()
            .rposition(|&b| b != 0)
            .map_or(VALID_BASE as usize, |i| i + 1);
        let mut data = String::with_capacity((end - VALID_BASE as usize) * 3);
        for b in &self.mem.0[VALID_BASE as usize..end] {
            data.push_str(&format!("\\{b:02x}"));
        }
        format!(
            r#"(module
  (memory (export "memory") {MEM_PAGES})
  (global $heap (mut i32) (i32.const {HEAP}))
  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    ;; wrap around: what the host passed in earlier calls is dead
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const {MEM_SIZE}))
      (then (local.set $p (i32.const {HEAP}))))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const {MEM_SIZE}))
      (then unreachable))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    {realloc_result})
  (func (export "sluice:operator/processor@0.1.3#init") (param i32 i32 i32 i32 i32 i32) (result i32)
    (i32.const {INIT_RET}))
  (func (export "sluice:operator/processor@0.1.3#process") (param $ptr i32) (param $len i32) (result i32)
    (if (result i32) (i32.eqz (local.get $len))
      (then (i32.const {valid}))
      (else (i32.const {hostile}))))
  (data (i32.const {VALID_BASE}) "{data}")
)"#,
            valid = self.valid.ret as i32,
            hostile = self.hostile_ret as i32,
        )
    }

    /// The component's bytes.
    fn component(&self) -> Vec<u8> {
        let mut module = wat::parse_str(self.wat()).expect("the generated WAT parses");
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve
            .push_dir(repo_root().join("wit"))
            .expect("wit/ parses");
        let world = resolve
            .select_world(&[pkg], Some("process-operator"))
            .expect("the world exists");
        wit_component::embed_component_metadata(
            &mut module,
            &resolve,
            world,
            wit_component::StringEncoding::UTF8,
        )
        .expect("metadata embeds");
        wit_component::ComponentEncoder::default()
            .validate(true)
            .module(&module)
            .expect("the module fits the world")
            .encode()
            .expect("the component encodes")
    }

    /// Write the component to `dir/<name>.wasm`.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, self.component()).unwrap();
        path
    }
}

fn record() -> wit::Record {
    wit::Record {
        key: Some(b"in".to_vec()),
        value: b"input".to_vec(),
        event_time: Some(7),
        headers: vec![],
    }
}

fn instantiate(runtime: &Runtime, path: &Path) -> sluice_runtime::Instance {
    let plugin = runtime
        .load(path)
        .unwrap_or_else(|e| panic!("{} is refused: {e}", path.display()));
    plugin
        .instantiate(
            InstanceConfig::new("hostile"),
            None,
            Arc::new(Metrics::default()),
        )
        .unwrap_or_else(|e| panic!("{} does not instantiate: {e}", path.display()))
}

/// Debug text of a result (the generated types have no `PartialEq`).
fn show(r: &wit::BatchResult) -> String {
    format!("{r:?}")
}

#[test]
fn a_crafted_valid_result_is_lifted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = Guest::new().write(dir.path(), "valid");
    let runtime = Runtime::new(None).unwrap();
    let mut instance = instantiate(&runtime, &path);
    // The crafted image (non-empty batch) and the valid one (empty batch) are the same.
    let got = instance
        .process(&[record()])
        .expect("a valid result is accepted");
    assert_eq!(show(&got), show(&expected_valid()));
    let got = instance.process(&[]).expect("a valid result is accepted");
    assert_eq!(show(&got), show(&expected_valid()));
    // The host lowered a record into guest memory and called again: still fine.
    let got = instance
        .process(&[record(), record()])
        .expect("a valid result is accepted");
    assert_eq!(show(&got), show(&expected_valid()));
}

/// One hostile patch of the crafted image: (what, patch, words of the error).
type Patch = fn(&mut Guest);

fn cases() -> Vec<(&'static str, Patch, &'static [&'static str])> {
    const OOB: &[&str] = &["out of bounds"];
    const ALIGN: &[&str] = &["not aligned"];
    const UTF8: &[&str] = &["utf-8"];
    vec![
        // Lengths and pointers out of bounds.
        (
            "huge emits length",
            |g| g.mem.u32(g.hostile.ret + R_EMITS_LEN, 0x0fff_ffff),
            OOB,
        ),
        (
            "u32::MAX emits length",
            |g| g.mem.u32(g.hostile.ret + R_EMITS_LEN, u32::MAX),
            OOB,
        ),
        (
            "emits pointer past memory",
            |g| g.mem.u32(g.hostile.ret + R_EMITS_PTR, 0xffff_fff8),
            OOB,
        ),
        (
            "emits ending 8 bytes past memory",
            |g| {
                g.mem
                    .u32(g.hostile.ret + R_EMITS_PTR, MEM_SIZE - 2 * EMIT_SIZE + 8);
            },
            OOB,
        ),
        (
            "huge record value length",
            |g| g.mem.u32(g.hostile.emits[0] + E_VALUE_LEN, 0x7fff_ffff),
            OOB,
        ),
        (
            "u32::MAX record value length",
            |g| g.mem.u32(g.hostile.emits[1] + E_VALUE_LEN, u32::MAX),
            OOB,
        ),
        (
            "record value pointer past memory",
            |g| g.mem.u32(g.hostile.emits[0] + E_VALUE_PTR, 0xffff_fff0),
            OOB,
        ),
        (
            "record value ending one byte past memory",
            |g| {
                g.mem.u32(
                    g.hostile.emits[0] + E_VALUE_PTR,
                    MEM_SIZE - VALUE0.len() as u32 + 1,
                );
            },
            OOB,
        ),
        (
            "huge key length",
            |g| g.mem.u32(g.hostile.emits[0] + E_KEY_LEN, 0x8000_0000),
            OOB,
        ),
        (
            "huge headers length",
            |g| g.mem.u32(g.hostile.emits[0] + E_HEADERS_LEN, 0x1000_0000),
            OOB,
        ),
        (
            "header value pointer past memory",
            |g| g.mem.u32(g.hostile.header + H_VALUE_PTR, MEM_SIZE),
            OOB,
        ),
        (
            "huge header name length",
            |g| g.mem.u32(g.hostile.header + H_NAME_LEN, u32::MAX),
            OOB,
        ),
        (
            "huge errors length",
            |g| g.mem.u32(g.hostile.ret + R_ERRORS_LEN, 0x1555_5556),
            OOB,
        ),
        (
            "errors pointer past memory",
            |g| g.mem.u32(g.hostile.ret + R_ERRORS_PTR, 0xffff_fffc),
            OOB,
        ),
        (
            "huge error message length",
            |g| g.mem.u32(g.hostile.error + ER_MSG_LEN, 0xffff_0000),
            OOB,
        ),
        (
            "error message pointer past memory",
            |g| g.mem.u32(g.hostile.error + ER_MSG_PTR, 0x8000_0000),
            OOB,
        ),
        (
            "side output name pointer past memory",
            |g| g.mem.u32(g.hostile.emits[1] + E_SIDE_PTR, MEM_SIZE + 1),
            OOB,
        ),
        (
            "return area past memory",
            |g| g.hostile_ret = 0xffff_fff0,
            OOB,
        ),
        (
            "return area ending past memory",
            |g| g.hostile_ret = MEM_SIZE - RESULT_SIZE + 4,
            OOB,
        ),
        // Misaligned pointers.
        (
            "emits pointer 4 off its alignment of 8",
            |g| {
                let p = g.mem.get_u32(g.hostile.ret + R_EMITS_PTR);
                g.mem.u32(g.hostile.ret + R_EMITS_PTR, p + 4);
            },
            ALIGN,
        ),
        (
            "headers pointer 2 off its alignment of 4",
            |g| {
                let p = g.mem.get_u32(g.hostile.emits[0] + E_HEADERS_PTR);
                g.mem.u32(g.hostile.emits[0] + E_HEADERS_PTR, p + 2);
            },
            ALIGN,
        ),
        (
            "errors pointer 1 off its alignment of 4",
            |g| {
                let p = g.mem.get_u32(g.hostile.ret + R_ERRORS_PTR);
                g.mem.u32(g.hostile.ret + R_ERRORS_PTR, p + 1);
            },
            ALIGN,
        ),
        (
            "return area 2 off its alignment of 4",
            |g| g.hostile_ret += 2,
            ALIGN,
        ),
        // Invalid discriminants.
        (
            "output variant tag 7",
            |g| g.mem.u8(g.hostile.emits[0] + E_OUTPUT_TAG, 7),
            &["discriminant"],
        ),
        (
            "output variant tag 255",
            |g| g.mem.u8(g.hostile.emits[1] + E_OUTPUT_TAG, 255),
            &["discriminant"],
        ),
        (
            "option<list<u8>> key tag 2",
            |g| g.mem.u8(g.hostile.emits[0] + E_KEY_TAG, 2),
            &["discriminant"],
        ),
        (
            "option<s64> event-time tag 2",
            |g| g.mem.u8(g.hostile.emits[0] + E_TIME_TAG, 2),
            &["discriminant"],
        ),
        (
            "option<s64> event-time tag 128",
            |g| g.mem.u8(g.hostile.emits[1] + E_TIME_TAG, 128),
            &["discriminant"],
        ),
        // Invalid UTF-8.
        (
            "invalid UTF-8 in a side output name",
            |g| {
                let p = g.mem.get_u32(g.hostile.emits[1] + E_SIDE_PTR);
                g.mem.bytes(p + 2, &[0xff, 0xfe]);
            },
            UTF8,
        ),
        (
            "a lone continuation byte in an error message",
            |g| {
                let p = g.mem.get_u32(g.hostile.error + ER_MSG_PTR);
                g.mem.u8(p, 0x80);
            },
            UTF8,
        ),
        (
            "a truncated 3-byte sequence ending an error message",
            |g| {
                let p = g.mem.get_u32(g.hostile.error + ER_MSG_PTR);
                let len = g.mem.get_u32(g.hostile.error + ER_MSG_LEN);
                g.mem.bytes(p + len - 2, &[0xe2, 0x82]);
            },
            UTF8,
        ),
        (
            "a UTF-16 surrogate encoded in a header name",
            |g| {
                let at = g.hostile.free;
                g.mem.bytes(at, &[0xed, 0xa0, 0x80]);
                g.mem.u32(g.hostile.header + H_NAME_PTR, at);
                g.mem.u32(g.hostile.header + H_NAME_LEN, 3);
            },
            UTF8,
        ),
        // The guest's allocator lies to the host lowering the batch.
        (
            "cabi_realloc returning a pointer past memory",
            |g| g.realloc = Realloc::OutOfBounds,
            &["realloc"],
        ),
        (
            "cabi_realloc returning a misaligned pointer",
            |g| g.realloc = Realloc::Misaligned,
            &["realloc"],
        ),
    ]
}

#[test]
fn hostile_results_are_refused_and_the_host_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(None).unwrap();
    let mut failures = vec![];
    for (i, (what, patch, words)) in cases().into_iter().enumerate() {
        let mut guest = Guest::new();
        patch(&mut guest);
        let path = guest.write(dir.path(), &format!("case{i}"));
        let mut instance = instantiate(&runtime, &path);
        match instance.process(&[record()]) {
            Ok(r) => failures.push(format!("{what}: accepted as {}", show(&r))),
            Err(CallError::Trap(msg)) => {
                if let Some(w) = words
                    .iter()
                    .find(|w| !msg.to_lowercase().contains(&w.to_lowercase()))
                {
                    failures.push(format!("{what}: expected `{w}` in: {msg}"));
                }
            }
            Err(e) => failures.push(format!("{what}: refused, but not as a trap: {e}")),
        }
        // The instance is replaced and the host goes on.
        instance
            .reset()
            .unwrap_or_else(|e| panic!("{what}: reset fails: {e}"));
        if guest.realloc == Realloc::Honest {
            let got = instance
                .process(&[])
                .unwrap_or_else(|e| panic!("{what}: the follow-up call fails: {e}"));
            assert_eq!(
                show(&got),
                show(&expected_valid()),
                "{what}: the follow-up call"
            );
        } else {
            // Every list lowering hits the lying allocator; the call must still return.
            assert!(instance.process(&[]).is_err(), "{what}: the follow-up call");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}

// ---- ABI-valid but meaningless: input indexes outside the batch ---------

/// Run a one-record pipeline through the component at `plugin`.
fn run_pipeline(dir: &Path, plugin: &Path, limits: &str) -> Result<(), String> {
    std::fs::write(dir.join("input.txt"), "only line\n").unwrap();
    let text = format!(
        r#"
manifest_version = 1
name = "hostile"

[[sources]]
name = "lines"
type = "file"
path = "input.txt"

[[operators]]
name = "hostile"
plugin = "{plugin}"
input = "lines"
on_error = "dead-letter"
{limits}

[[sinks]]
name = "out"
type = "file"
input = "hostile"
path = "out.txt"

[[sinks]]
name = "side"
type = "file"
input = "hostile.alerts"
path = "side.txt"

[[sinks]]
name = "dead"
type = "file"
input = "hostile.dead-letter"
path = "dead.jsonl"
"#,
        plugin = plugin.display()
    );
    let path = write_pipeline(dir, &text);
    run_in_process(&path, &dir.join("state"), 16).map(|_| ())
}

fn assert_bad_index(err: &str, index: u32) {
    assert!(err.contains("operator `hostile`"), "{err}");
    assert!(
        err.contains(&format!(
            "the plugin referred to input {index} of a batch of 1"
        )),
        "{err}"
    );
    assert!(!err.contains("panic"), "{err}");
}

#[test]
fn the_crafted_valid_result_runs_through_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Guest::new().write(dir.path(), "valid");
    run_pipeline(dir.path(), &plugin, "").expect("the pipeline runs");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("side.txt")).unwrap(),
        "world\n"
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["error"], "bad input");
    assert_eq!(dead[0]["value"]["utf8"], "only line");
}

#[test]
fn an_error_naming_an_input_outside_the_batch_fails_the_run_cleanly() {
    for index in [1, 5, u32::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let mut guest = Guest::new();
        guest.mem.u32(guest.hostile.error + ER_INPUT, index);
        let plugin = guest.write(dir.path(), "bad-error-index");
        let err = run_pipeline(dir.path(), &plugin, "").expect_err("the run must fail");
        assert_bad_index(&err, index);
    }
}

#[test]
fn an_oversized_emit_naming_an_input_outside_the_batch_fails_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut guest = Guest::new();
    // A 2 KiB value against limits.max_record_kb = 1, from input 9.
    let big = guest.hostile.free;
    guest.mem.bytes(big, &[b'x'; 2048]);
    let e0 = guest.hostile.emits[0];
    guest.mem.u32(e0 + E_VALUE_PTR, big);
    guest.mem.u32(e0 + E_VALUE_LEN, 2048);
    guest.mem.u32(e0 + E_INPUT, 9);
    let plugin = guest.write(dir.path(), "bad-emit-index-oversized");
    let err = run_pipeline(dir.path(), &plugin, "limits = { max_record_kb = 1 }")
        .expect_err("the run must fail");
    assert_bad_index(&err, 9);
}

#[test]
fn an_emit_naming_an_input_outside_the_batch_fails_the_run_cleanly() {
    for (emit, index) in [(0, 1), (1, 1000), (0, u32::MAX)] {
        let dir = tempfile::tempdir().unwrap();
        let mut guest = Guest::new();
        guest.mem.u32(guest.hostile.emits[emit] + E_INPUT, index);
        let plugin = guest.write(dir.path(), "bad-emit-index");
        let err = run_pipeline(dir.path(), &plugin, "").expect_err("the run must fail");
        assert_bad_index(&err, index);
    }
}

// ---- bounded property loop -------------------------------------------

/// Seeded xorshift64: deterministic, no RNG crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random u32 biased to the values that break lifting code.
fn hostile_u32(rng: &mut XorShift, original: u32) -> u32 {
    match rng.below(10) {
        0 => 0,
        1 => u32::MAX,
        2 => 0x8000_0000,
        3 => MEM_SIZE - rng.below(80) as u32,
        4 => MEM_SIZE + rng.below(80) as u32,
        5 => original.wrapping_add(rng.below(9) as u32).wrapping_sub(4),
        6 => rng.below(64) as u32,
        7 => original ^ (1 << rng.below(32)),
        8 => rng.below(HEAP as u64) as u32,
        _ => rng.next() as u32,
    }
}

/// Randomise 1 to 4 fields (lengths, pointers, tags, indexes) or bytes of the
/// crafted image; returns what was done.
fn mutate(guest: &mut Guest, rng: &mut XorShift) -> Vec<String> {
    let h = guest.hostile;
    let words = [
        h.ret + R_EMITS_PTR,
        h.ret + R_EMITS_LEN,
        h.ret + R_ERRORS_PTR,
        h.ret + R_ERRORS_LEN,
        h.emits[0] + E_KEY_PTR,
        h.emits[0] + E_KEY_LEN,
        h.emits[0] + E_VALUE_PTR,
        h.emits[0] + E_VALUE_LEN,
        h.emits[0] + E_HEADERS_PTR,
        h.emits[0] + E_HEADERS_LEN,
        h.emits[0] + E_INPUT,
        h.emits[1] + E_SIDE_PTR,
        h.emits[1] + E_SIDE_LEN,
        h.emits[1] + E_VALUE_PTR,
        h.emits[1] + E_VALUE_LEN,
        h.emits[1] + E_HEADERS_PTR,
        h.emits[1] + E_HEADERS_LEN,
        h.header + H_NAME_PTR,
        h.header + H_NAME_LEN,
        h.header + H_VALUE_PTR,
        h.header + H_VALUE_LEN,
        h.error + ER_INPUT,
        h.error + ER_MSG_PTR,
        h.error + ER_MSG_LEN,
    ];
    let tags = [
        h.emits[0] + E_OUTPUT_TAG,
        h.emits[0] + E_KEY_TAG,
        h.emits[0] + E_TIME_TAG,
        h.emits[1] + E_OUTPUT_TAG,
        h.emits[1] + E_KEY_TAG,
        h.emits[1] + E_TIME_TAG,
    ];
    let mut done = vec![];
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0..=4 => {
                let at = words[rng.below(words.len() as u64) as usize];
                let v = hostile_u32(rng, guest.mem.get_u32(at));
                guest.mem.u32(at, v);
                done.push(format!("u32 at {at} = {v:#x}"));
            }
            5 | 6 => {
                let at = tags[rng.below(tags.len() as u64) as usize];
                let v = if rng.below(2) == 0 {
                    rng.below(4) as u8
                } else {
                    rng.next() as u8
                };
                guest.mem.u8(at, v);
                done.push(format!("tag at {at} = {v}"));
            }
            _ => {
                // Any byte of the image (including the strings' bytes).
                let at = h.ret + rng.below((h.free - h.ret) as u64) as u32;
                let v = rng.next() as u8;
                guest.mem.u8(at, v);
                done.push(format!("byte at {at} = {v:#x}"));
            }
        }
    }
    if rng.below(16) == 0 {
        guest.hostile_ret = hostile_u32(rng, guest.hostile_ret);
        done.push(format!("return area at {:#x}", guest.hostile_ret));
    }
    done
}

#[test]
fn random_hostile_results_never_panic_or_stop_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(None).unwrap();
    let mut rng = XorShift(0x5eed_0f5a_1ce0_u64);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..64 {
        let mut guest = Guest::new();
        let done = mutate(&mut guest, &mut rng);
        let path = guest.write(dir.path(), &format!("prop{i}"));
        let mut instance = instantiate(&runtime, &path);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            instance.process(&[record()])
        }));
        match outcome {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("iteration {i}: the host panicked on a guest result with {done:?}"),
        }
        instance
            .reset()
            .unwrap_or_else(|e| panic!("iteration {i} ({done:?}): reset fails: {e}"));
        let got = instance
            .process(&[])
            .unwrap_or_else(|e| panic!("iteration {i} ({done:?}): the follow-up call fails: {e}"));
        assert_eq!(
            show(&got),
            show(&expected_valid()),
            "iteration {i} ({done:?}): the follow-up call"
        );
    }
    assert_eq!(accepted + refused, 64);
    // The mutations are biased to break things: most must be refused.
    assert!(
        refused >= 32,
        "only {refused} of 64 random results were refused"
    );
}

// ---- aliasing: a small guest result that lifts to a huge host value -----

#[test]
fn an_aliased_result_cannot_amplify_host_memory_past_the_hostcall_fuel() {
    // 2560 headers (40 KiB), every one's value the whole first 64 KiB of
    // memory: ABI-valid (the canonical ABI allows aliasing), but the lifted
    // record would be 2560 * 64 KiB = 160 MiB from a guest of 128 KiB, more
    // than the guest's whole memory cap of 64 MiB. The host sets wasmtime's
    // hostcall fuel (what one call may copy out) to the memory cap, which
    // stops the lift; without it a 64 MiB guest could ask for TiBs.
    const N: u32 = 2560;
    let mut guest = Guest::new();
    let headers = (guest.hostile.free + 3) & !3;
    assert!(headers + N * HEADER_SIZE <= HEAP);
    for i in 0..N {
        let h = headers + i * HEADER_SIZE;
        guest.mem.u32(h + H_NAME_PTR, 0);
        guest.mem.u32(h + H_NAME_LEN, 0);
        guest.mem.u32(h + H_VALUE_PTR, 0);
        guest.mem.u32(h + H_VALUE_LEN, HEAP);
    }
    let e0 = guest.hostile.emits[0];
    guest.mem.u32(e0 + E_HEADERS_PTR, headers);
    guest.mem.u32(e0 + E_HEADERS_LEN, N);
    let dir = tempfile::tempdir().unwrap();
    let path = guest.write(dir.path(), "aliased");
    let runtime = Runtime::new(None).unwrap();
    let mut instance = instantiate(&runtime, &path);
    match instance.process(&[record()]) {
        Ok(r) => {
            let bytes: usize = r
                .emits
                .iter()
                .flat_map(|e| &e.record.headers)
                .map(|h| h.value.len())
                .sum();
            panic!(
                "accepted: {} MiB lifted from a guest of {} KiB of memory",
                bytes >> 20,
                MEM_SIZE >> 10
            );
        }
        Err(CallError::Trap(msg)) => assert!(msg.contains("too much data"), "{msg}"),
        Err(e) => panic!("refused, but not as a trap: {e}"),
    }
    instance.reset().expect("reset");
    let got = instance.process(&[]).expect("the follow-up call");
    assert_eq!(show(&got), show(&expected_valid()));
}
