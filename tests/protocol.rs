//! The page's protocol with its engine worker (`nse::session::protocol`): its wire form, the
//! version check, and the refusal of messages the worker cannot read. In the browser the same
//! types cross `postMessage` through serde-wasm-bindgen; JSON stands in for it here.

use nse::edit::{EditRequest, MethodKind};
use nse::session::protocol::{
    Backend, Body, Event, Failure, FromWorker, Header, Item, PROTOCOL_VERSION, Plan, Reply,
    Request, Source, ToWorker, check_version,
};
use nse::session::{RequestProbes, Rewind};
use serde_json::json;

fn request() -> EditRequest {
    EditRequest::from_sentence(
        "The Eiffel Tower is located in",
        "The Eiffel Tower",
        "Rome",
        Some("Paris"),
    )
    .expect("a valid request")
}

#[test]
fn every_request_survives_the_wire() {
    let all = vec![
        Request::Hello,
        Request::Cancel,
        Request::StopBench,
        Request::Check { request: request() },
        Request::Load {
            source: Source::Url {
                url: "models/x.gguf".into(),
            },
            backend: Backend::Cpu,
            max_binding: Some(1 << 20),
        },
        Request::Load {
            source: Source::Files {
                names: vec!["config.json".into(), "model.safetensors".into()],
            },
            backend: Backend::Webgpu,
            max_binding: None,
        },
        Request::Generate {
            prompt: "Paris is".into(),
            max_tokens: 8,
        },
        Request::Apply {
            items: vec![Item {
                request: request(),
                probes: RequestProbes {
                    paraphrase: vec!["Where is the Eiffel Tower?".into()],
                    neighborhood: vec![],
                },
            }],
            plan: Plan {
                batch: 1,
                method: MethodKind::Alphaedit,
                cov_budget: 4096,
            },
        },
        Request::Rewind {
            what: Rewind::Remove(2),
            method: MethodKind::Nse,
            cov_budget: 4096,
        },
        Request::Rewind {
            what: Rewind::Last,
            method: MethodKind::MemitSeq,
            cov_budget: 4096,
        },
        Request::ExportPatch,
        Request::ImportPatch {
            name: "a.nsepatch".into(),
            method: MethodKind::Nse,
        },
        Request::ExportModel,
        Request::SetHparams {
            json: "{\"layers\": [1, 2]}".into(),
        },
        Request::Bench {
            n: 4,
            plan: Plan {
                batch: 2,
                method: MethodKind::Nse,
                cov_budget: 4096,
            },
        },
        Request::ApplyDataset {
            n: 3,
            plan: Plan {
                batch: 2,
                method: MethodKind::Memit,
                cov_budget: 2048,
            },
        },
        Request::ArmPanic,
    ];
    for (id, r) in all.into_iter().enumerate() {
        let msg = ToWorker {
            v: PROTOCOL_VERSION,
            id: id as u32,
            request: r,
        };
        let wire = serde_json::to_value(&msg).unwrap();
        // Every request names its kind in a `kind` field the page's JavaScript can read.
        assert!(wire["request"]["kind"].is_string(), "{wire}");
        let back: ToWorker = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(back, msg, "{wire}");
        let header: Header = serde_json::from_value(wire).unwrap();
        assert_eq!(header.id, id as u32);
    }
}

#[test]
fn the_wire_form_is_the_documented_one() {
    let msg = ToWorker {
        v: PROTOCOL_VERSION,
        id: 7,
        request: Request::Rewind {
            what: Rewind::Remove(1),
            method: MethodKind::MemitSeq,
            cov_budget: 2048,
        },
    };
    assert_eq!(
        serde_json::to_value(&msg).unwrap(),
        json!({"v": PROTOCOL_VERSION, "id": 7, "request": {"kind": "rewind",
            "what": {"take": "remove", "entry": 1}, "method": "memit-seq", "cov_budget": 2048}})
    );
    let out = FromWorker {
        v: PROTOCOL_VERSION,
        id: 7,
        body: Body::Event {
            event: Event::Progress {
                fraction: Some(0.5),
                label: "half".into(),
            },
        },
    };
    assert_eq!(
        serde_json::to_value(&out).unwrap(),
        json!({"v": PROTOCOL_VERSION, "id": 7, "body": {"type": "event",
            "event": {"event": "progress", "fraction": 0.5, "label": "half"}}})
    );
    let done = FromWorker {
        v: PROTOCOL_VERSION,
        id: 7,
        body: Body::Done {
            outcome: Err(Failure::busy("an edit")),
        },
    };
    let wire = serde_json::to_value(&done).unwrap();
    assert_eq!(wire["body"]["outcome"]["Err"]["code"], "Busy");
    assert_eq!(
        serde_json::from_value::<FromWorker>(wire).unwrap(),
        done,
        "an outcome survives the wire"
    );
    // The apply plan is flattened into its request.
    let apply = ToWorker {
        v: PROTOCOL_VERSION,
        id: 8,
        request: Request::Bench {
            n: 2,
            plan: Plan {
                batch: 1,
                method: MethodKind::Nse,
                cov_budget: 1024,
            },
        },
    };
    assert_eq!(
        serde_json::to_value(&apply).unwrap()["request"],
        json!({"kind": "bench", "n": 2, "batch": 1, "method": "nse", "cov_budget": 1024})
    );
    let ok = serde_json::to_value(Reply::Loaded { secs: 1.5 }).unwrap();
    assert_eq!(ok, json!({"reply": "loaded", "secs": 1.5}));
}

#[test]
fn a_message_of_another_version_or_kind_is_refused_with_a_reload_hint() {
    assert!(check_version(PROTOCOL_VERSION).is_ok());
    let f = check_version(PROTOCOL_VERSION + 1).unwrap_err();
    assert_eq!(f.code, "Protocol");
    assert!(f.message.contains("reload"), "{}", f.message);
    assert!(
        f.message
            .contains(&format!("version {}", PROTOCOL_VERSION + 1)),
        "{}",
        f.message
    );

    // An unknown kind still has a readable header, so the refusal goes back under its id.
    let unknown = json!({"v": PROTOCOL_VERSION, "id": 9, "request": {"kind": "format_disk"}});
    let header: Header = serde_json::from_value(unknown.clone()).unwrap();
    assert_eq!(
        header,
        Header {
            v: PROTOCOL_VERSION,
            id: 9
        }
    );
    assert!(serde_json::from_value::<ToWorker>(unknown).is_err());
    // A field of the wrong type is refused the same way, not guessed at.
    let bad = json!({"v": PROTOCOL_VERSION, "id": 10,
        "request": {"kind": "generate", "prompt": 5, "max_tokens": 8}});
    assert!(serde_json::from_value::<ToWorker>(bad).is_err());
}

#[test]
fn jobs_and_immediate_requests_are_told_apart() {
    for r in [
        Request::Hello,
        Request::Cancel,
        Request::StopBench,
        Request::ArmPanic,
        Request::Check { request: request() },
    ] {
        assert!(!r.is_job(), "{r:?} is answered at once");
    }
    for r in [
        Request::ExportPatch,
        Request::ExportModel,
        Request::Generate {
            prompt: "x".into(),
            max_tokens: 1,
        },
    ] {
        assert!(r.is_job(), "{r:?} is a job");
    }
}

#[test]
fn library_errors_keep_their_code() {
    let f = Failure::from(nse::Error::Cancelled("stopped by the user".into()));
    assert_eq!(f.code, "Cancelled");
    let f = Failure::from(nse::Error::BufferTooLarge {
        name: "embed".into(),
        bytes: 10,
        limit: 5,
    });
    assert_eq!(f.code, "ModelTooLarge");
    assert!(f.message.contains("embed"), "{}", f.message);
    assert_eq!(Failure::no_model().code, "NoModel");
}
