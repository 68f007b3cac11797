//! The SDK's own behaviour, driven through the native harness. Each module
//! holds one operator (the macros define `__sluice_operator` next to it).

mod process_op {
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{log, Context, Counter, Error, MapState, Output, Record, ValueState};

    static TOTAL: ValueState<u64> = ValueState::new("total");
    static WORDS: MapState<String, u32> = MapState::new("words");
    static SEEN: Counter = Counter::new("seen");

    #[sluice_sdk::process]
    fn op(record: Record, ctx: &mut Context) -> Result<(), Error> {
        SEEN.increment();
        let text = record
            .value_str()
            .ok_or_else(|| Error::msg("value is not UTF-8"))?
            .to_owned();
        if text == "fail" {
            ctx.emit_to("audit", Record::new("before failing"));
            sluice_sdk::bail!("asked to fail");
        }
        if text == "clear" {
            TOTAL.clear();
            WORDS.clear();
            return Ok(());
        }
        let n: u64 = ctx.params().get_or("step", 1)?;
        let total = TOTAL.update(|t| t.unwrap_or(0) + n)?;
        for w in text.split_whitespace() {
            let c = WORDS.get(&w.to_owned())?.unwrap_or(0);
            WORDS.insert(&w.to_owned(), &(c + 1))?;
        }
        if text.contains("drop") {
            WORDS.remove(&"drop".to_owned())?;
        }
        let key = ctx.key_str().unwrap_or("-").to_owned();
        ctx.emit(Record::new(format!("{key}:{total}")));
        ctx.emit_to("words", Record::new(format!("{}", WORDS.entries()?.len())));
        if ctx.input_index() == 0 {
            log::info!("first record of batch, key {key}");
        }
        Ok(())
    }

    fn h(params: &str) -> Harness {
        Harness::new(__sluice_operator(), params)
    }

    #[test]
    fn emits_main_and_side_outputs_with_provenance() {
        let mut h = h("{}");
        let out = h.process(vec![
            Record::new("a b").with_key("k1"),
            Record::new("fail").with_key("k1"),
            Record::new("c").with_key("k2"),
        ]);
        assert_eq!(out.main_values(), ["k1:1", "k2:1"]);
        assert_eq!(out.side("words").len(), 2);
        assert_eq!(out.side("audit")[0].value, b"before failing");
        let inputs: Vec<(u32, Output)> = out
            .emits
            .iter()
            .map(|e| (e.input, e.output.clone()))
            .collect();
        assert_eq!(
            inputs,
            [
                (0, Output::Main),
                (0, Output::Side("words".into())),
                (1, Output::Side("audit".into())),
                (2, Output::Main),
                (2, Output::Side("words".into())),
            ]
        );
        assert_eq!(out.errors.len(), 1);
        assert_eq!(
            (out.errors[0].input, out.errors[0].message.as_str()),
            (1, "asked to fail")
        );
        assert_eq!(h.counter("seen"), 3);
        assert_eq!(h.counter("never"), 0);
        assert_eq!(
            h.logs(),
            [(log::Level::Info, "first record of batch, key k1".to_owned())]
        );
    }

    #[test]
    fn state_is_per_key_and_persists() {
        let mut h = h(r#"{"step": 10}"#);
        h.process(vec![
            Record::new("x y").with_key("a"),
            Record::new("x").with_key("b"),
        ]);
        let out = h.process(vec![Record::new("x drop").with_key("a")]);
        assert_eq!(out.main_values(), ["a:20"]);
        assert_eq!(h.value::<u64>("total", b"a"), Some(20));
        assert_eq!(h.value::<u64>("total", b"b"), Some(10));
        assert_eq!(
            h.map_entries::<String, u32>("words", b"a"),
            [("x".to_owned(), 2), ("y".to_owned(), 1)]
        );
        h.process(vec![Record::new("clear").with_key("a")]);
        assert_eq!(h.value::<u64>("total", b"a"), None);
        assert!(h.map_entries::<String, u32>("words", b"a").is_empty());
        assert_eq!(h.value::<u64>("total", b"b"), Some(10));
    }

    #[test]
    fn harnesses_are_isolated() {
        let mut one = h("{}");
        let mut two = h("{}");
        one.process(vec![Record::new("x").with_key("k")]);
        assert_eq!(
            two.process(vec![Record::new("x").with_key("k")])
                .main_values(),
            ["k:1"]
        );
        assert_eq!(
            one.process(vec![Record::new("x").with_key("k")])
                .main_values(),
            ["k:2"]
        );
    }

    #[test]
    fn wrong_param_type_is_a_record_error_naming_the_param() {
        let mut h = h(r#"{"step": "big"}"#);
        let out = h.process(vec![Record::new("x").with_key("k")]);
        assert!(
            out.errors[0]
                .message
                .starts_with("param `step`: invalid type"),
            "{:?}",
            out.errors
        );
    }

    #[test]
    fn state_without_a_key_traps() {
        let mut h = h("{}");
        let err = h.try_process(vec![Record::new("x")]).unwrap_err();
        assert!(err.contains("which has no key"), "{err}");
    }

    #[test]
    fn params_must_be_an_object() {
        let err = Harness::try_new(__sluice_operator(), "[1]").unwrap_err();
        assert_eq!(err.message(), "params must be a JSON object, got an array");
        let err = Harness::try_new(__sluice_operator(), "{").unwrap_err();
        assert!(
            err.message().starts_with("params are not valid JSON"),
            "{err}"
        );
    }
}

mod filter_op {
    use serde::Deserialize;
    use sluice_sdk::testing::Harness;
    use sluice_sdk::{Error, Params, Record};

    #[derive(Deserialize)]
    struct P {
        needle: String,
    }

    fn check(params: &Params) -> Result<(), Error> {
        if params
            .get::<String>("needle")?
            .is_some_and(|n| n.is_empty())
        {
            sluice_sdk::bail!("needle must not be empty");
        }
        Ok(())
    }

    #[sluice_sdk::filter(params = P, init = check)]
    fn contains(record: &Record, p: &P) -> Result<bool, std::str::Utf8Error> {
        Ok(std::str::from_utf8(&record.value)?.contains(&p.needle))
    }

    #[test]
    fn filters_with_typed_params_and_init_hook() {
        let mut h = Harness::new(__sluice_operator(), r#"{"needle": "ab"}"#);
        let out = h.process(vec![
            Record::new("xaby").with_header("h", "1"),
            Record::new("xy"),
            Record::new(vec![0xff]),
        ]);
        assert_eq!(out.main_values(), ["xaby"]);
        assert_eq!(out.main()[0].header("h"), Some(&b"1"[..]));
        assert_eq!(out.errors[0].input, 2);
        assert!(
            out.errors[0].message.contains("invalid utf-8"),
            "{:?}",
            out.errors
        );
        assert_eq!(
            Harness::try_new(__sluice_operator(), r#"{"needle": ""}"#)
                .unwrap_err()
                .message(),
            "needle must not be empty"
        );
        assert_eq!(
            Harness::try_new(__sluice_operator(), "{}")
                .unwrap_err()
                .message(),
            "invalid params: missing field `needle`"
        );
    }
}

mod map_op {
    use sluice_sdk::{testing::Harness, Error, Record};

    #[sluice_sdk::map]
    fn upper(record: Record) -> Result<Record, Error> {
        let v: serde_json::Value = record.json()?;
        let s = v
            .as_str()
            .ok_or_else(|| Error::msg("expected a JSON string"))?
            .to_uppercase();
        record.with_json(&s)
    }

    #[test]
    fn maps_json() {
        let mut h = Harness::new(__sluice_operator(), "");
        let out = h.process(vec![
            Record::from_json("abc")
                .unwrap()
                .with_key("k")
                .with_event_time(3),
            Record::new("1"),
        ]);
        assert_eq!(out.main_values(), ["\"ABC\""]);
        assert_eq!(out.main()[0].key_str(), Some("k"));
        assert_eq!(out.main()[0].event_time, Some(3));
        assert_eq!(out.error_messages(), ["expected a JSON string"]);
    }
}
