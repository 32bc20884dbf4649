//! The tokenizer built from the default model's GGUF metadata, against the ids of the model's
//! design notes and the golden reference runs (`tests/golden/`).

use std::sync::OnceLock;

use nse::Error;
use nse::model::Tokenizer;
use nse::model::gguf::GgufFile;

use crate::common::{DEFAULT_MODEL_FILE, golden_json, model_bytes};

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let gguf = GgufFile::parse(model_bytes(), DEFAULT_MODEL_FILE).unwrap();
        Tokenizer::from_gguf(&gguf).unwrap()
    })
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `(text, ids)` of every prompt with golden ids: forward.json, then micro-3.json's key prompts
/// and z prompts.
fn golden_prompts() -> Vec<(String, Vec<u32>)> {
    let mut out = Vec::new();
    for p in golden_json("forward.json")["prompts"].as_array().unwrap() {
        out.push((p["prompt"].as_str().unwrap().to_string(), ids(&p["ids"])));
    }
    let micro = golden_json("micro-3.json");
    for k in micro["key_prompts"].as_array().unwrap() {
        out.push((
            k["text"].as_str().unwrap().to_string(),
            ids(&k["input_ids"]),
        ));
    }
    for z in micro["z"].as_array().unwrap() {
        let prompts = z["prompts"].as_array().unwrap();
        let input_ids = z["input_ids"].as_array().unwrap();
        assert_eq!(prompts.len(), input_ids.len());
        for (p, i) in prompts.iter().zip(input_ids) {
            out.push((p.as_str().unwrap().to_string(), ids(i)));
        }
    }
    out
}

#[test]
fn model_md_token_ids() {
    let t = tokenizer();
    assert_eq!(
        t.encode("The capital of France is").unwrap(),
        [504, 3575, 282, 4649, 314]
    );
    assert_eq!(
        t.encode("The Eiffel Tower is located in the city of")
            .unwrap(),
        [504, 414, 46682, 18669, 314, 3807, 281, 260, 2240, 282]
    );
    assert_eq!(
        (t.vocab_size(), t.bos_id(), t.eos_id(), t.add_bos()),
        (49152, Some(1), Some(2), false)
    );
}

#[test]
fn golden_prompt_ids_match_the_reference_tokenizer() {
    let prompts = golden_prompts();
    assert!(
        prompts.len() >= 5 + 18 + 21,
        "only {} golden prompts found",
        prompts.len()
    );
    for (text, want) in &prompts {
        assert_eq!(&tokenizer().encode(text).unwrap(), want, "prompt {text:?}");
    }
}

#[test]
fn decode_round_trips() {
    let t = tokenizer();
    let mut texts: Vec<String> = golden_prompts().into_iter().map(|(s, _)| s).collect();
    texts.extend(
        [
            "In 1999, 12345 people paid $3.50 for 2 items.",
            "Café naïve — 東京タワー 🚀 Ünïcödé ε = 0.001",
            "  leading spaces,\n\ttabs, trailing  ",
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
            "",
        ]
        .map(String::from),
    );
    for text in &texts {
        assert_eq!(&t.decode(&t.encode(text).unwrap()).unwrap(), text);
    }
}

#[test]
fn digits_are_split_and_special_tokens_kept() {
    let t = tokenizer();
    let digits = t.encode("12345").unwrap();
    assert_eq!(digits.len(), 5);
    assert_eq!(t.decode(&digits[1..2]).unwrap(), "2");
    let chat = t.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(chat.first(), Some(&1));
    assert_eq!(chat.last(), Some(&2));
    assert_eq!(t.token_str(504).as_deref(), Some("The"));
    assert_eq!(t.token_str(3575).as_deref(), Some(" capital"));
    assert_eq!(t.token_str(2).as_deref(), Some("<|im_end|>"));
    assert_eq!(t.token_str(49152), None);
    assert_eq!(t.token_to_id("Ġcapital"), Some(3575));
    // Greedy continuation of the first model.md prompt: " Paris." then a newline.
    assert_eq!(
        t.decode(&t.encode(" Paris.\n").unwrap()).unwrap(),
        " Paris.\n"
    );
}

#[test]
fn decoding_an_id_outside_the_vocabulary_is_an_input_error() {
    match tokenizer().decode(&[504, 49152]) {
        Err(Error::Input(msg)) => assert!(msg.contains("49152"), "{msg}"),
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

#[test]
fn exported_tokenizer_json_gives_the_same_ids() {
    let json = tokenizer().to_json().unwrap();
    let back = Tokenizer::from_json(&json, "exported.json").unwrap();
    assert!(!back.add_bos());
    for (text, want) in golden_prompts().iter().take(12) {
        assert_eq!(&back.encode(text).unwrap(), want, "prompt {text:?}");
    }
    assert_eq!(
        back.decode(&[504, 3575, 2]).unwrap(),
        "The capital<|im_end|>"
    );
}
