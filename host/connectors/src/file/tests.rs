//! Tests of the file connector: the source, the sink, and the exactly-once
//! epochs of `txn.rs` through every crash point. One file (~740 lines)
//! because the crash cases share their fixture and read as one table.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use sluice_types::{ConnectorError, Header, Record, Sink, SinkSnapshot, Source};

use super::sink::Mode;
use super::*;
use crate::format::SinkFormat;

fn read_all(source: &mut FileSource, max: usize) -> Vec<Record> {
    let mut all = Vec::new();
    while let Some(batch) = source.poll_batch(max).unwrap() {
        assert!(batch.len() <= max);
        all.extend(batch);
    }
    assert!(source.poll_batch(max).unwrap().is_none(), "stays exhausted");
    all
}

#[test]
fn source_line_numbers_and_empty_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    std::fs::write(
        &path,
        b"{\"a\":1}\n\n{\"a\":2}\r\n\r\nnot json\n\n{\"a\":3}",
    )
    .unwrap();
    let mut source = FileSource::new(&FileSourceConfig::new(path), 3).unwrap();
    let records = read_all(&mut source, 2);
    let got: Vec<(&[u8], u64)> = records
        .iter()
        .map(|r| (&r.value[..], r.position.unwrap().offset))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"{\"a\":1}"[..], 1),
            (&b"{\"a\":2}"[..], 3),
            (&b"not json"[..], 5),
            (&b"{\"a\":3}"[..], 7)
        ]
    );
    for r in &records {
        let pos = r.position.unwrap();
        assert_eq!((pos.source, pos.split), (3, 0));
        assert_eq!((r.key.as_ref(), r.event_time), (None, None));
    }
}

#[test]
fn source_empty_file_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, b"\n\n").unwrap();
    let mut source = FileSource::new(&FileSourceConfig::new(path), 0).unwrap();
    assert!(read_all(&mut source, 10).is_empty());
}

#[test]
fn source_refuses_a_line_over_max_record_kb_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let exact = "x".repeat(1024);
    let long = "y".repeat(64 << 10);
    std::fs::write(&path, format!("a\n{exact}\r\n{exact}\n{long}\nb\n")).unwrap();
    let config = FileSourceConfig {
        path: path.clone(),
        max_record_kb: 1,
    };
    let mut source = FileSource::new(&config, 0).unwrap();
    let batch = source.poll_batch(3).unwrap().unwrap();
    assert_eq!(
        batch.iter().map(|r| r.value.len()).collect::<Vec<_>>(),
        vec![1, 1024, 1024],
        "a line of exactly max_record_kb is accepted"
    );
    let err = source.poll_batch(3).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("line 4 is longer than the source's max_record_kb = 1 KiB"),
        "{err}"
    );
    // The reader held at most the limit of the long line.
    assert!(
        source.buf.capacity() < 8 << 10,
        "{} bytes buffered",
        source.buf.capacity()
    );
    // Without a line ending at the end of the file too.
    std::fs::write(&path, "y".repeat(1025)).unwrap();
    let err = FileSource::new(&config, 0)
        .unwrap()
        .poll_batch(3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1 is longer"), "{err}");
    let err = FileSource::new(
        &FileSourceConfig {
            path,
            max_record_kb: 0,
        },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("`max_record_kb` is 0"), "{err}");
}

#[test]
fn source_missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.jsonl");
    let err = FileSource::new(&FileSourceConfig::new(path.clone()), 0)
        .err()
        .unwrap();
    assert!(matches!(err, ConnectorError::Io { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn config_parsing() {
    let c: FileSinkConfig = serde_json::from_str(r#"{"path": "x.jsonl"}"#).unwrap();
    assert_eq!(c.format, SinkFormat::Value);
    let c: FileSinkConfig =
        serde_json::from_str(r#"{"path": "x.jsonl", "format": "envelope"}"#).unwrap();
    assert_eq!(c.format, SinkFormat::Envelope);
    assert!(serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "format": "csv"}"#).is_err());
    assert!(serde_json::from_str::<FileSinkConfig>(r#"{"path": "x", "fromat": "value"}"#).is_err());
    assert!(serde_json::from_str::<FileSourceConfig>(r#"{"path": "x", "name": "s"}"#).is_err());
    assert!(serde_json::from_str::<FileSourceConfig>(r#"{}"#).is_err());
}

#[test]
fn sink_round_trip_through_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/out.jsonl");
    let records: Vec<Record> = crate::datagen::records(
        &crate::datagen::TaxiConfig {
            count: Some(1000),
            malformed_ratio: 0.0,
            ..Default::default()
        },
        0,
    )
    .collect();
    let mut sink = FileSink::new(&FileSinkConfig {
        path: path.clone(),
        format: SinkFormat::Value,
    })
    .unwrap();
    for chunk in records.chunks(77) {
        sink.write(chunk).unwrap();
    }
    sink.flush().unwrap();
    let mut source = FileSource::new(&FileSourceConfig::new(path.clone()), 0).unwrap();
    let back = read_all(&mut source, 100);
    assert_eq!(back.len(), records.len());
    for (i, (a, b)) in records.iter().zip(&back).enumerate() {
        assert_eq!(a.value, b.value);
        assert_eq!(b.position.unwrap().offset, i as u64 + 1);
    }

    // Reopening truncates.
    let mut sink = FileSink::new(&FileSinkConfig {
        path: path.clone(),
        format: SinkFormat::Value,
    })
    .unwrap();
    sink.write(&[Record::from_value("x")]).unwrap();
    drop(sink);
    assert_eq!(std::fs::read(&path).unwrap(), b"x\n");
}

#[test]
fn sink_envelope_with_binary_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.jsonl");
    let mut sink = FileSink::new(&FileSinkConfig {
        path: path.clone(),
        format: SinkFormat::Envelope,
    })
    .unwrap();
    let records = vec![
        Record {
            key: Some(b"k".to_vec()),
            value: b"{\"n\": 1.50}".to_vec(),
            event_time: Some(7),
            headers: vec![Header {
                name: "h".into(),
                value: b"v".to_vec(),
            }],
            position: None,
        },
        Record::from_value("plain text"),
        Record::from_value(vec![0xff, b'\n', 0x00]),
    ];
    sink.write(&records).unwrap();
    sink.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"{"key":"k","value":{"n":1.50},"event_time":7,"headers":{"h":"v"}}"#,
            r#"{"key":null,"value":"plain text","event_time":null,"headers":{}}"#,
            r#"{"key":null,"value_base64":"/woA","event_time":null,"headers":{}}"#,
        ]
    );
}

// ---- exactly-once mode ----

const OUT: &str = "out.jsonl";

fn eo_sink(dir: &Path) -> FileSink {
    FileSink::exactly_once(&FileSinkConfig {
        path: dir.join(OUT),
        format: SinkFormat::Value,
    })
    .unwrap()
}

/// The records of epoch `epoch`: `e<epoch>-<i>` for `i` in `0..n`.
fn epoch_records(epoch: u64, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::from_value(format!("e{epoch}-{i}")))
        .collect()
}

/// What the output holds once the epochs are committed (`n` records each).
fn output_of(epochs: impl IntoIterator<Item = (u64, usize)>) -> String {
    let mut out = String::new();
    for (epoch, n) in epochs {
        for i in 0..n {
            out.push_str(&format!("e{epoch}-{i}\n"));
        }
    }
    out
}

fn read_out(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(OUT)).unwrap()
}

/// Files in `dir` other than the output.
fn others(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != OUT)
        .collect();
    names.sort();
    names
}

/// Write epoch `epoch` (`n` records, in two batches) and pre-commit it.
fn run_epoch(sink: &mut FileSink, epoch: u64, n: usize) -> SinkSnapshot {
    let records = epoch_records(epoch, n);
    let (a, b) = records.split_at(n / 2);
    sink.write(a).unwrap();
    sink.flush().unwrap();
    sink.write(b).unwrap();
    sink.pre_commit(epoch).unwrap()
}

/// A crash: the process dies, nothing is flushed or dropped.
fn crash(sink: FileSink) {
    std::mem::forget(sink);
}

/// Restart from `checkpoint`, check the output is exactly `expected`
/// with no leftovers, then run and commit one more epoch.
fn restart_and_continue(dir: &Path, checkpoint: u64, snapshot: &SinkSnapshot, expected: &str) {
    let mut sink = eo_sink(dir);
    sink.start(Some((checkpoint, snapshot))).unwrap();
    assert_eq!(read_out(dir), expected);
    assert!(others(dir).is_empty(), "{:?}", others(dir));
    let next = checkpoint + 1;
    let snap = run_epoch(&mut sink, next, 3);
    assert_eq!(read_out(dir), expected, "not visible before commit");
    let len = (expected.len() + output_of([(next, 3)]).len()) as u64;
    assert_eq!(snap["committed_len"], len);
    sink.commit(next).unwrap();
    assert_eq!(
        read_out(dir),
        format!("{expected}{}", output_of([(next, 3)]))
    );
    assert!(others(dir).is_empty(), "{:?}", others(dir));
}

#[test]
fn exactly_once_a_full_disk_never_leaves_part_of_an_epoch_in_the_output() {
    let committed = output_of([(1, 4)]);
    let epoch = output_of([(2, 50)]);
    for room in [0, 1, 7, epoch.len() as u64 / 2, epoch.len() as u64 - 1] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        run_epoch(&mut sink, 1, 4);
        sink.commit(1).unwrap();
        let snap = run_epoch(&mut sink, 2, 50);
        let Mode::ExactlyOnce(txn) = &mut sink.mode else {
            unreachable!()
        };
        txn.room_for_test = Some(room);
        let err = sink.commit(2).expect_err("the disk is full");
        assert!(err.to_string().contains("appending to sink file"), "{err}");
        assert_eq!(
            read_out(d),
            committed,
            "room for {room} bytes: the output holds committed epochs only"
        );
        assert_eq!(others(d), vec!["out.jsonl.pending-2"]);
        assert!(sink.commit(2).is_err(), "failed until restarted");
        crash(sink);
        // The restart (with room again) appends the epoch whole.
        restart_and_continue(d, 2, &snap, &format!("{committed}{epoch}"));
    }
}

#[test]
fn exactly_once_fresh_start_truncates_and_cleans_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in [
        OUT,
        "out.jsonl.inprogress",
        "out.jsonl.pending-3",
        "out.jsonl.pending-17",
    ] {
        std::fs::write(d.join(name), b"old\n").unwrap();
    }
    // Not ours: left alone.
    for name in [
        "out.jsonl.pending-x",
        "out.jsonl.pending-007",
        "other.jsonl.pending-1",
        "notes.txt",
    ] {
        std::fs::write(d.join(name), b"keep\n").unwrap();
    }
    let mut sink = eo_sink(d);
    assert!(sink.exactly_once());
    assert_eq!(read_out(d), "old\n", "the constructor touches nothing");
    sink.start(None).unwrap();
    assert_eq!(read_out(d), "");
    assert_eq!(
        others(d),
        vec![
            "notes.txt",
            "other.jsonl.pending-1",
            "out.jsonl.pending-007",
            "out.jsonl.pending-x"
        ]
    );

    // Missing file and directories are created.
    let path = d.join("a/b/new.jsonl");
    let mut sink = FileSink::exactly_once(&FileSinkConfig {
        path: path.clone(),
        format: SinkFormat::Value,
    })
    .unwrap();
    sink.start(None).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn exactly_once_output_visible_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sink = eo_sink(d);
    sink.start(None).unwrap();
    sink.write(&epoch_records(1, 4)).unwrap();
    sink.flush().unwrap();
    assert_eq!(read_out(d), "");
    assert_eq!(others(d), vec!["out.jsonl.inprogress"]);
    assert_eq!(
        std::fs::read_to_string(d.join("out.jsonl.inprogress")).unwrap(),
        output_of([(1, 4)])
    );

    let snap = sink.pre_commit(1).unwrap();
    let n = output_of([(1, 4)]).len() as u64;
    assert_eq!(
        snap,
        serde_json::json!({"committed_len": n, "pending": "out.jsonl.pending-1", "pending_len": n})
    );
    assert_eq!(read_out(d), "");
    assert_eq!(others(d), vec!["out.jsonl.pending-1"]);

    sink.commit(1).unwrap();
    assert_eq!(read_out(d), output_of([(1, 4)]));
    assert!(others(d).is_empty());
}

#[test]
fn exactly_once_epochs_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sink = eo_sink(d);
    sink.start(None).unwrap();
    let s1 = run_epoch(&mut sink, 1, 3);
    sink.write(&[]).unwrap();
    let s2 = sink.pre_commit(2).unwrap(); // empty epoch
    let s3 = run_epoch(&mut sink, 3, 5);
    let s5 = run_epoch(&mut sink, 5, 2);
    let len = |e: &[(u64, usize)]| output_of(e.iter().copied()).len() as u64;
    assert_eq!(s1["committed_len"], len(&[(1, 3)]));
    assert_eq!(
        s2,
        serde_json::json!({"committed_len": len(&[(1, 3)]), "pending": null, "pending_len": 0})
    );
    assert_eq!(s3["committed_len"], len(&[(1, 3), (3, 5)]));
    assert_eq!(s5["committed_len"], len(&[(1, 3), (3, 5), (5, 2)]));
    assert_eq!(
        others(d),
        vec![
            "out.jsonl.pending-1",
            "out.jsonl.pending-3",
            "out.jsonl.pending-5"
        ]
    );
    assert_eq!(read_out(d), "");

    // A commit commits every epoch up to it, in order.
    sink.commit(3).unwrap();
    assert_eq!(read_out(d), output_of([(1, 3), (3, 5)]));
    assert_eq!(others(d), vec!["out.jsonl.pending-5"]);
    sink.commit(2).unwrap(); // already committed
    sink.commit(4).unwrap(); // nothing pending up to 4
    assert_eq!(read_out(d), output_of([(1, 3), (3, 5)]));
    sink.commit(5).unwrap();
    assert_eq!(read_out(d), output_of([(1, 3), (3, 5), (5, 2)]));
    assert!(others(d).is_empty());

    // The end of a bounded input: a final pre-commit and commit.
    let snap = run_epoch(&mut sink, 6, 1);
    assert_eq!(
        snap["committed_len"],
        len(&[(1, 3), (3, 5), (5, 2), (6, 1)])
    );
    sink.commit(6).unwrap();
    assert_eq!(read_out(d), output_of([(1, 3), (3, 5), (5, 2), (6, 1)]));
}

#[test]
fn exactly_once_commit_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sink = eo_sink(d);
    sink.start(None).unwrap();
    sink.commit(1).unwrap(); // nothing pre-committed
    run_epoch(&mut sink, 1, 2);
    sink.commit(1).unwrap();
    sink.commit(1).unwrap();
    sink.commit(0).unwrap();
    sink.commit(u64::MAX).unwrap();
    assert_eq!(read_out(d), output_of([(1, 2)]));
    run_epoch(&mut sink, 2, 2);
    sink.commit(2).unwrap();
    sink.commit(2).unwrap();
    sink.commit(1).unwrap();
    assert_eq!(read_out(d), output_of([(1, 2), (2, 2)]));
    assert!(others(d).is_empty());
}

/// Fresh start, epochs 1 and 2 committed, epoch 3 pre-committed: returns
/// the sink and the snapshot of checkpoint 3.
fn setup_checkpoint_3(d: &Path) -> (FileSink, SinkSnapshot) {
    let mut sink = eo_sink(d);
    sink.start(None).unwrap();
    run_epoch(&mut sink, 1, 4);
    sink.commit(1).unwrap();
    run_epoch(&mut sink, 2, 3);
    sink.commit(2).unwrap();
    let snap = run_epoch(&mut sink, 3, 5);
    (sink, snap)
}

const AT_3: [(u64, usize); 3] = [(1, 4), (2, 3), (3, 5)];

#[test]
fn exactly_once_restart_after_pre_commit_without_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut sink, snap) = setup_checkpoint_3(d);
    // Records of the next epoch were written (and flushed) before the crash.
    sink.write(&epoch_records(4, 2)).unwrap();
    sink.flush().unwrap();
    crash(sink);
    assert_eq!(read_out(d), output_of([(1, 4), (2, 3)]));
    restart_and_continue(d, 3, &snap, &output_of(AT_3));
}

#[test]
fn exactly_once_restart_after_partial_append() {
    let n = output_of([(3, 5)]).len();
    for cut in [0, 1, n / 2, n - 1, n] {
        for garbage in [&b""[..], b"\0\0\0\0"] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let (sink, snap) = setup_checkpoint_3(d);
            crash(sink);
            // A commit of 3 died mid-append (or after the append, before
            // the deletion of the pending file).
            let pending = std::fs::read(d.join("out.jsonl.pending-3")).unwrap();
            let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
            out.write_all(&pending[..cut]).unwrap();
            out.write_all(garbage).unwrap();
            drop(out);
            restart_and_continue(d, 3, &snap, &output_of(AT_3));
        }
    }
}

#[test]
fn exactly_once_restart_after_completed_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut sink, snap) = setup_checkpoint_3(d);
    sink.commit(3).unwrap();
    sink.write(&epoch_records(4, 2)).unwrap();
    crash(sink);
    assert_eq!(read_out(d), output_of(AT_3));
    restart_and_continue(d, 3, &snap, &output_of(AT_3));
}

#[test]
fn exactly_once_restart_with_later_epochs_pre_committed() {
    // (commit of 3 done?, how much of epoch 4 reached the output by hand)
    for (commit_3, epoch_4_bytes) in [
        (false, None),
        (true, None),
        (true, Some(0.5)),
        (true, Some(1.0)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (mut sink, snap) = setup_checkpoint_3(d);
        if commit_3 {
            sink.commit(3).unwrap();
        }
        run_epoch(&mut sink, 4, 2);
        run_epoch(&mut sink, 5, 3);
        sink.write(&epoch_records(6, 2)).unwrap();
        sink.flush().unwrap();
        crash(sink);
        if let Some(fraction) = epoch_4_bytes {
            // A commit of 4 died mid-append: checkpoint 4 completed, but
            // the pipeline restarts from 3 anyway.
            let pending = std::fs::read(d.join("out.jsonl.pending-4")).unwrap();
            let cut = (pending.len() as f64 * fraction) as usize;
            let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
            out.write_all(&pending[..cut]).unwrap();
        }
        restart_and_continue(d, 3, &snap, &output_of(AT_3));
    }
}

#[test]
fn exactly_once_restart_with_several_uncommitted_epochs() {
    // Commits of 2 and 3 were skipped (or 3's died after 2 was appended).
    for appended in [0, 1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut sink = eo_sink(d);
        sink.start(None).unwrap();
        run_epoch(&mut sink, 1, 4);
        sink.commit(1).unwrap();
        run_epoch(&mut sink, 2, 3);
        let snap = run_epoch(&mut sink, 3, 5);
        run_epoch(&mut sink, 4, 1);
        crash(sink);
        let pending_2 = std::fs::read(d.join("out.jsonl.pending-2")).unwrap();
        let mut out = OpenOptions::new().append(true).open(d.join(OUT)).unwrap();
        match appended {
            1 => out.write_all(&pending_2[..5]).unwrap(),
            2 => {
                out.write_all(&pending_2).unwrap();
                std::fs::remove_file(d.join("out.jsonl.pending-2")).unwrap();
            }
            _ => {}
        }
        drop(out);
        restart_and_continue(d, 3, &snap, &output_of(AT_3));
    }

    // The same with an empty epoch 3.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sink = eo_sink(d);
    sink.start(None).unwrap();
    run_epoch(&mut sink, 1, 4);
    run_epoch(&mut sink, 2, 3);
    let snap = sink.pre_commit(3).unwrap();
    assert_eq!(snap["pending"], serde_json::Value::Null);
    crash(sink);
    restart_and_continue(d, 3, &snap, &output_of([(1, 4), (2, 3)]));
}

#[test]
fn exactly_once_restore_can_be_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sink, snap) = setup_checkpoint_3(d);
    crash(sink);
    for _ in 0..3 {
        let mut sink = eo_sink(d);
        sink.start(Some((3, &snap))).unwrap();
        sink.write(&epoch_records(4, 2)).unwrap();
        crash(sink);
        assert_eq!(read_out(d), output_of(AT_3));
    }
    restart_and_continue(d, 3, &snap, &output_of(AT_3));
    // The restored checkpoint 0 of an empty output.
    let mut sink = eo_sink(d);
    let empty = serde_json::json!({"committed_len": 0, "pending": null, "pending_len": 0});
    sink.start(Some((0, &empty))).unwrap();
    assert_eq!(read_out(d), "");
}

#[test]
fn exactly_once_restart_fails_on_shortened_output() {
    let expect_lost = |d: &Path, snap: &SinkSnapshot| {
        let err = eo_sink(d)
            .start(Some((3, snap)))
            .expect_err("start must fail");
        assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&d.join(OUT).display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("modified or lost outside Sluice"),
            "{message}"
        );
    };
    // Committed output, then shortened.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut sink, snap) = setup_checkpoint_3(d);
    sink.commit(3).unwrap();
    crash(sink);
    let len = std::fs::metadata(d.join(OUT)).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(d.join(OUT))
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    expect_lost(d, &snap);
    // Deleted.
    std::fs::remove_file(d.join(OUT)).unwrap();
    expect_lost(d, &snap);

    // Epoch 3 pending, and the committed part before it shortened.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (sink, snap) = setup_checkpoint_3(d);
    crash(sink);
    let len = std::fs::metadata(d.join(OUT)).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(d.join(OUT))
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    expect_lost(d, &snap);
    assert!(
        d.join("out.jsonl.pending-3").exists(),
        "nothing is deleted on failure"
    );

    // A pending file changed size.
    std::fs::write(d.join("out.jsonl.pending-3"), b"x\n").unwrap();
    let err = eo_sink(d).start(Some((3, &snap))).err().unwrap();
    assert!(err.to_string().contains("modified outside Sluice"), "{err}");

    // Not a file sink snapshot.
    let err = eo_sink(d)
        .start(Some((3, &SinkSnapshot::Null)))
        .err()
        .unwrap();
    assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
}

#[test]
fn exactly_once_misuse_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sink = eo_sink(d);
    assert!(
        sink.write(&epoch_records(1, 1)).is_err(),
        "write before start"
    );
    sink.start(None).unwrap();
    run_epoch(&mut sink, 5, 1);
    let err = sink.pre_commit(5).err().unwrap();
    assert!(err.to_string().contains("must increase"), "{err}");
    // The sink is now failed until restarted.
    assert!(sink.commit(5).is_err());
    sink.start(None).unwrap();
    run_epoch(&mut sink, 1, 1);
    sink.commit(1).unwrap();
    assert_eq!(read_out(d), output_of([(1, 1)]));
}

#[test]
fn at_least_once_keeps_default_checkpoint_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(OUT);
    std::fs::write(&path, b"old\n").unwrap();
    let mut sink = FileSink::new(&FileSinkConfig {
        path: path.clone(),
        format: SinkFormat::Value,
    })
    .unwrap();
    assert!(!sink.exactly_once());
    assert_eq!(std::fs::read(&path).unwrap(), b"", "truncated on open");
    sink.start(None).unwrap();
    sink.write(&[Record::from_value("a")]).unwrap();
    assert_eq!(sink.pre_commit(1).unwrap(), SinkSnapshot::Null);
    assert_eq!(std::fs::read(&path).unwrap(), b"a\n", "pre-commit flushes");
    sink.commit(1).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"a\n");
    assert_eq!(others(dir.path()), Vec::<String>::new());
    let config = FileSinkConfig {
        path,
        format: SinkFormat::Value,
    };
    let boxed: Box<dyn Sink> = Box::new(FileSink::exactly_once(&config).unwrap());
    assert!(boxed.exactly_once());
}
