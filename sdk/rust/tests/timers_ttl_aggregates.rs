//! Timers, state TTL and window aggregates, driven through the native harnesses.
//! Each module holds one operator.

mod keyed_timers {
    use serde::Deserialize;
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{timers, Context, Error, Params, Record, TimeDomain, Timer, ValueState};

    static SEEN: ValueState<u32> = ValueState::new("seen");

    #[derive(Deserialize)]
    struct P {
        #[serde(default)]
        prefix: String,
    }

    fn check(params: &Params) -> Result<(), Error> {
        if params.get::<String>("prefix")?.as_deref() == Some("bad") {
            sluice_sdk::bail!("bad prefix");
        }
        Ok(())
    }

    /// Values: `at:<ts>` registers an event-time timer, `pt:<ts>` a
    /// processing-time one, `del:<ts>` deletes the event-time one.
    #[sluice_sdk::process(params = P, init = check, on_timer = fired)]
    fn op(record: Record, _ctx: &mut Context, _p: &P) -> Result<(), Error> {
        SEEN.update(|n| n.unwrap_or(0) + 1)?;
        let v = record.value_str().unwrap_or("");
        if let Some(t) = v.strip_prefix("at:") {
            timers::register_event_time(t.parse()?);
        } else if let Some(t) = v.strip_prefix("pt:") {
            timers::register_processing_time(t.parse()?);
        } else if let Some(t) = v.strip_prefix("del:") {
            timers::delete_event_time(t.parse()?);
        }
        Ok(())
    }

    fn fired(timer: Timer, ctx: &mut Context, p: &P) -> Result<(), Error> {
        assert_eq!(
            ctx.key(),
            Some(&timer.key[..]),
            "the timer's key is current"
        );
        let seen = SEEN.get()?.unwrap_or(0);
        let key = timer.key_str().unwrap_or("?").to_owned();
        if key == "fail" {
            sluice_sdk::bail!("timer failed");
        }
        if key == "again" && timer.timestamp < 30 {
            // Already due: fires in a later round of the same advance.
            timers::register_event_time(timer.timestamp + 10);
        }
        ctx.emit(Record::new(format!(
            "{}{key}@{}:{seen}:{:?}",
            p.prefix,
            timer.timestamp,
            timers::current_watermark()
        )));
        Ok(())
    }

    #[test]
    fn fires_in_order_with_indices_rounds_and_errors() {
        let mut h = Harness::new(__sluice_operator(), r#"{"prefix": "T "}"#);
        assert!(__sluice_operator().has_timers());
        h.process(vec![
            Record::new("at:20").with_key("b"),
            Record::new("at:10").with_key("fail"),
            Record::new("at:20").with_key("a"),
            Record::new("at:20").with_key("a"), // same timer: no-op
            Record::new("at:10").with_key("again"),
            Record::new("at:99").with_key("a"),
            Record::new("del:99").with_key("a"),
        ]);
        assert_eq!(h.timers(b"a"), [(TimeDomain::EventTime, 20)]);
        assert_eq!(h.watermark(), None);
        let out = h.advance_watermark(35);
        assert_eq!(
            out.main_values(),
            [
                "T again@10:1:Some(35)",
                "T a@20:4:Some(35)",
                "T b@20:1:Some(35)",
                "T again@20:1:Some(35)", // registered by again@10: a second round
                "T again@30:1:Some(35)", // and a third
            ]
        );
        // Ties by key: again@10 is index 0, fail@10 index 1, ...; later
        // rounds continue the count.
        assert_eq!(
            out.emits.iter().map(|e| e.input).collect::<Vec<_>>(),
            [0, 2, 3, 4, 5]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            (out.errors[0].input, out.errors[0].message.as_str()),
            (1, "timer failed")
        );
        // The watermark never goes back.
        assert!(h.advance_watermark(0).emits.is_empty());
        assert_eq!(h.watermark(), Some(35));
    }

    #[test]
    fn processing_time_timers_and_init() {
        let mut h = Harness::new(__sluice_operator(), "{}");
        h.process(vec![
            Record::new("pt:100").with_key("k"),
            Record::new("at:100").with_key("k"),
        ]);
        assert_eq!(
            h.timers(b"k"),
            [
                (TimeDomain::EventTime, 100),
                (TimeDomain::ProcessingTime, 100)
            ]
        );
        assert!(h.advance_processing_time(99).emits.is_empty());
        assert_eq!(
            h.advance_processing_time(100).main_values(),
            ["k@100:2:None"]
        );
        assert_eq!(h.processing_time(), 100);
        assert_eq!(h.timers(b"k"), [(TimeDomain::EventTime, 100)]);
        assert_eq!(
            Harness::try_new(__sluice_operator(), r#"{"prefix": "bad"}"#)
                .unwrap_err()
                .message(),
            "bad prefix"
        );
    }

    #[test]
    fn timers_need_a_key() {
        let mut h = Harness::new(__sluice_operator(), "{}");
        let err = h.try_process(vec![Record::new("at:1")]).unwrap_err();
        assert!(err.contains("has no key"), "{err}");
    }
}

mod no_timers {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{timers, Context, Error, Record};

    #[sluice_sdk::process]
    fn op(_record: Record, _ctx: &mut Context) -> Result<(), Error> {
        timers::register_event_time(5);
        Ok(())
    }

    #[test]
    fn timers_without_on_timer_panic_clearly() {
        assert!(!__sluice_operator().has_timers());
        let mut h = Harness::new(__sluice_operator(), "{}");
        let err = h
            .try_process(vec![Record::new("").with_key("k")])
            .unwrap_err();
        assert!(
            err.contains("without an `on_timer` handler") && err.contains("register_event_time"),
            "{err}"
        );
        // Advancing the clocks is harmless.
        assert!(h.advance_watermark(10).emits.is_empty());
    }
}

mod ttl_state {
    use std::time::Duration;

    use sluice_sdk::testing::Harness;
    use sluice_sdk::{Context, Error, MapState, Record, ValueState};

    static FOREVER: ValueState<String> = ValueState::new("v");
    static SHORT: ValueState<String> = ValueState::with_ttl("short", Duration::from_millis(100));
    static WORDS: MapState<String, i64> = MapState::with_ttl("words", Duration::from_secs(1));

    #[sluice_sdk::process]
    fn op(record: Record, ctx: &mut Context) -> Result<(), Error> {
        let v = record.value_str().unwrap_or("").to_owned();
        if v == "?" {
            let words: Vec<String> = WORDS.entries()?.into_iter().map(|(w, _)| w).collect();
            ctx.emit(Record::new(format!(
                "{:?} {:?} {}",
                FOREVER.get()?,
                SHORT.get()?,
                words.join(",")
            )));
            return Ok(());
        }
        FOREVER.set(&v)?;
        SHORT.set(&v)?;
        WORDS.insert(&v, &0)?;
        Ok(())
    }

    #[test]
    fn entries_expire_on_the_processing_time_clock() {
        assert_eq!(SHORT.ttl(), Some(Duration::from_millis(100)));
        assert_eq!(FOREVER.ttl(), None);
        let mut h = Harness::new(__sluice_operator(), "{}");
        h.process(vec![Record::new("a").with_key("k")]);
        h.advance_processing_time(50);
        h.process(vec![Record::new("b").with_key("k")]); // rewrites "short" at 50
        h.advance_processing_time(149);
        let q = || vec![Record::new("?").with_key("k")];
        assert_eq!(h.process(q()).main_values(), [r#"Some("b") Some("b") a,b"#]);
        h.advance_processing_time(150);
        assert_eq!(h.process(q()).main_values(), [r#"Some("b") None a,b"#]);
        assert_eq!(h.value::<String>("short", b"k"), None);
        h.advance_processing_time(1000); // "a" written at 0 expires
        assert_eq!(h.process(q()).main_values(), [r#"Some("b") None b"#]);
        assert_eq!(
            h.map_entries::<String, i64>("words", b"k"),
            [("b".to_owned(), 0)]
        );
        h.advance_processing_time(1050);
        assert!(h.map_entries::<String, i64>("words", b"k").is_empty());
        assert_eq!(h.value::<String>("v", b"k").as_deref(), Some("b"));
    }
}

mod aggregate_on_struct {
    use serde::{Deserialize, Serialize};
    use sluice_sdk::aggregate::{Accumulate, FiredWindow};
    use sluice_sdk::testing::AggregateHarness;
    use sluice_sdk::{Aggregate, Error, Params, Record, Window, WindowOutput};

    #[derive(Deserialize)]
    struct P {
        sep: String,
    }

    fn hook(params: &Params) -> Result<(), Error> {
        sluice_sdk::log::info!("aggregate for {}", params.operator());
        Ok(())
    }

    /// Concatenates values; `!` is a per-record error; finish of "" fails.
    #[sluice_sdk::aggregate(init = hook)]
    #[derive(Default, Serialize, Deserialize)]
    struct Concat(Vec<String>);

    impl Aggregate for Concat {
        type Params = P;
        fn add(&mut self, record: &Record, _: &P) -> Result<(), Error> {
            let v = record.value_str().ok_or_else(|| Error::msg("not UTF-8"))?;
            if v == "!" {
                sluice_sdk::bail!("bang");
            }
            self.0.push(v.to_owned());
            Ok(())
        }
        fn merge(&mut self, other: Self, _: &P) {
            self.0.extend(other.0);
        }
        fn finish(
            self,
            key: &[u8],
            window: Window,
            out: &mut WindowOutput,
            p: &P,
        ) -> Result<(), Error> {
            if self.0.is_empty() {
                sluice_sdk::bail!("empty window");
            }
            out.emit(Record::new(self.0.join(&p.sep)));
            out.emit_to(
                "meta",
                Record::new(format!("{}", window.end))
                    .with_key(format!("{}!", String::from_utf8_lossy(key)))
                    .with_event_time(1),
            );
            Ok(())
        }
    }

    #[test]
    fn params_hook_errors_side_outputs_and_defaults() {
        assert!(AggregateHarness::try_new(__sluice_operator(), "{}")
            .unwrap_err()
            .message()
            .contains("missing field `sep`"));
        let mut h = AggregateHarness::new(__sluice_operator(), r#"{"sep": "+"}"#);
        assert_eq!(h.logs().len(), 1);
        let added = h.add(
            vec![
                Record::new("a"),
                Record::new("!"),
                Record::new("b"),
                Record::new("c"),
            ],
            vec![
                Accumulate {
                    accumulator: None,
                    inputs: vec![2, 0],
                },
                Accumulate {
                    accumulator: None,
                    inputs: vec![1],
                },
                Accumulate {
                    accumulator: None,
                    inputs: vec![3],
                },
            ],
        );
        assert_eq!(added.accumulators.len(), 3);
        assert_eq!(
            added
                .errors
                .iter()
                .map(|e| (e.input, e.message.as_str()))
                .collect::<Vec<_>>(),
            [(1, "bang")]
        );
        let merged = h.merge(vec![
            vec![added.accumulators[0].clone(), added.accumulators[2].clone()],
            vec![],
        ]);
        assert_eq!(
            AggregateHarness::decode::<Concat>(&merged[0]).0,
            ["b", "a", "c"]
        );
        assert!(AggregateHarness::decode::<Concat>(&merged[1]).0.is_empty());
        let out = h.finish(vec![
            FiredWindow {
                key: b"k".to_vec(),
                window: Window::new(0, 10),
                accumulator: merged[0].clone(),
            },
            FiredWindow {
                key: b"e".to_vec(),
                window: Window::new(0, 10),
                accumulator: merged[1].clone(),
            },
        ]);
        assert_eq!(out.main_values(), ["b+a+c"]);
        let meta = out.side("meta");
        assert_eq!(
            (meta[0].key_str(), meta[0].event_time),
            (Some("k!"), Some(1))
        );
        assert_eq!(out.main()[0].key_str(), Some("k"));
        assert_eq!(out.main()[0].event_time, Some(9));
        assert_eq!(
            out.errors
                .iter()
                .map(|e| (e.input, e.message.as_str()))
                .collect::<Vec<_>>(),
            [(1, "empty window")]
        );
    }

    #[test]
    fn tumbling_groups_by_key_and_window() {
        let mut h = AggregateHarness::new(__sluice_operator(), r#"{"sep": ""}"#);
        let run = h.tumbling(
            10,
            vec![
                Record::new("a").with_key("y").with_event_time(-1),
                Record::new("b").with_key("x").with_event_time(0),
                Record::new("c").with_key("y").with_event_time(9),
                Record::new("d").with_event_time(3),
                Record::new("!").with_key("x").with_event_time(1),
                Record::new("e").with_key("x").with_event_time(5),
            ],
        );
        assert_eq!(
            run.windows,
            [
                (b"y".to_vec(), Window::new(-10, 0)),
                (b"".to_vec(), Window::new(0, 10)),
                (b"x".to_vec(), Window::new(0, 10)),
                (b"y".to_vec(), Window::new(0, 10)),
            ]
        );
        assert_eq!(run.result.main_values(), ["a", "d", "be", "c"]);
        assert_eq!(run.record_errors.len(), 1);
        assert_eq!(run.record_errors[0].input, 4);
    }
}
