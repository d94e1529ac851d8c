//! The documented example configuration loads, and says exactly the built-in defaults,
//! so the documentation of every default cannot drift from the code.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use dialtone_core::{Config, ConfigLoader};

#[test]
fn the_example_configuration_is_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dialtone.example.toml");
    let loaded = ConfigLoader::new().no_env().file(path).load().expect("the example loads");
    assert_eq!(loaded, Config::default());
}

#[test]
fn every_default_key_appears_in_the_example() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dialtone.example.toml")).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for (section, keys) in defaults.as_object().unwrap() {
        let Some(keys) = keys.as_object() else { continue };
        assert!(text.contains(&format!("[{section}]")), "section [{section}] is missing");
        for key in keys.keys() {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            assert!(
                text.contains(&set) || text.contains(&commented),
                "key {section}.{key} is not documented"
            );
        }
    }
}
