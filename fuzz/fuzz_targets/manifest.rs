//! Manifests as `kubectl-lite apply -f` reads them, and what the apiserver does with each object.
//!
//! Input: a file's bytes. kubectl-lite reads files and stdin with `read_to_string`, which refuses
//! invalid UTF-8, so only UTF-8 reaches the parser here too. Then, per object:
//! * `kl_api::parse_manifests` (multi-document YAML, JSON, strict fields),
//! * `kl_api::set_defaults` and `kl_api::validate` (the apiserver's create path),
//! * the trip every object makes: to the apiserver as a prost `TypedObject`
//!   (`Object::into_typed`, encode, decode, `Object::from_typed`) and into etcd as JSON
//!   (`Object::to_json_bytes`, `Object::from_json`). Both must give back the same object: a
//!   difference is an object changed in transit, and a JSON that does not decode is an object
//!   stored but never readable again.
//!
//! Errors are fine; a panic, an abort or an assertion failure is a bug. `KL_FUZZ_DEBUG=1`
//! prints what each input parsed to (for reading a crash or checking a seed).
#![no_main]

use std::sync::OnceLock;

use kl_api::{parse_manifests, set_defaults, validate, Object, TypedObject};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let objects = match parse_manifests(text) {
        Ok(objects) => objects,
        Err(e) => {
            // kubectl-lite prints it.
            let message = e.to_string();
            if debug() {
                eprintln!("refused: {message}");
            }
            return;
        }
    };
    for mut obj in objects {
        set_defaults(&mut obj);
        let verdict = validate(&obj).map_err(|errs| errs.to_string());
        if debug() {
            eprintln!("{} {:?}: {verdict:?}", obj.kind(), obj.name());
        }

        let wire = obj.clone().into_typed().encode_to_vec();
        let typed = TypedObject::decode(wire.as_slice()).expect("a TypedObject we encoded decodes");
        assert_eq!(
            Object::from_typed(typed).as_ref(),
            Some(&obj),
            "the object changed on its way through protobuf"
        );

        let json = obj.to_json_bytes();
        match Object::from_json(obj.kind(), &json) {
            Ok(back) => assert_eq!(back, obj, "the object changed on its way through JSON"),
            Err(e) => panic!(
                "stored JSON does not decode: {e}\n{}",
                String::from_utf8_lossy(&json)
            ),
        }
    }
});

fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("KL_FUZZ_DEBUG").is_some())
}
