//! Fixture: a process operator without timers (world `process-operator`)
//! that reads what the host knows about each record (`record-info`, since
//! contract 0.1.3): the watermark as of the record and its source position.
//!
//! For each record it emits, on the main output if the record is on time
//! and on the side output `late` if its event time is at or below the
//! watermark, the record with its value replaced by
//!
//! ```text
//! {"offset":<n>,"source":"<name>","split":<n>,"time":<event time or null>,"watermark":<watermark or null>}
//! ```
//!
//! (keys in this order; `source`, `split` and `offset` are null when the host
//! knows no position.)

use sluice_sdk::{Context, Error, Record};

/// Tag each record with its watermark and position; late ones go to `late`.
#[sluice_sdk::process(side_outputs = ["late"])]
pub fn record_info(record: Record, ctx: &mut Context) -> Result<(), Error> {
    let wm = ctx.watermark();
    let pos = ctx.position();
    let value = serde_json::json!({
        "time": record.event_time,
        "watermark": wm,
        "source": pos.as_ref().map(|p| p.source.clone()),
        "split": pos.as_ref().map(|p| p.split),
        "offset": pos.as_ref().map(|p| p.offset),
    });
    let late = matches!((record.event_time, wm), (Some(t), Some(w)) if t <= w);
    let out = record.with_value(value.to_string());
    if late {
        ctx.emit_to("late", out);
    } else {
        ctx.emit(out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{harness, Position, Record};

    #[test]
    fn reports_position_and_sends_late_records_aside() {
        let mut h = harness!("{}");
        h.advance_watermark(100);
        let at = |offset| Position { source: "in".into(), split: 0, offset };
        let out = h.process_from(vec![Record::new("a").with_event_time(150), Record::new("b").with_event_time(100)], vec![at(1), at(2)]);
        let main = out.main();
        assert_eq!(main.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&main[0].value).unwrap();
        assert_eq!((v["watermark"].as_i64(), v["offset"].as_u64(), v["source"].as_str()), (Some(100), Some(1), Some("in")));
        assert_eq!(out.side("late").len(), 1, "event time 100 is at the watermark: late");
    }
}
