//! Profiles: model shapes (`profiles/*.toml`) and, in `hardware`, chips (`hardware/*.toml`).
//!
//! Two stages (as candle's `Config` and ripgrep's `LowArgs -> HiArgs`): a raw profile is parsed with
//! serde, which refuses unknown keys and wrong types; `resolve()` checks the rules and derives sizes.
//! A profile is named either by path (anything containing `/` or ending in `.toml`) or by name:
//! `$SPARSEWATT_PROFILES/<name>.toml`, then `./profiles/<name>.toml`, then the copy embedded at build.

pub mod hardware;
mod model;

pub use hardware::{
    hardware_names, load_all_hardware, load_hardware, parse_hardware, HardwareKind,
    HardwareProfile, PowerFigure, PowerScope, Precision, RawHardwareProfile,
};
pub use model::{FfnKind, Mla, ModelProfile, Positions, RawModelProfile};

use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_profiles.rs"));
}

/// Which kind of profile a lookup is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Model,
    Hardware,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Model => "profiles",
            Kind::Hardware => "hardware",
        }
    }
    /// The kind as an error message names it: "no model profile named ...".
    fn noun(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Hardware => "hardware",
        }
    }
    fn env_var(self) -> &'static str {
        match self {
            Kind::Model => "SPARSEWATT_PROFILES",
            Kind::Hardware => "SPARSEWATT_HARDWARE",
        }
    }
    fn embedded(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Model => embedded::MODEL_PROFILES,
            Kind::Hardware => embedded::HARDWARE_PROFILES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{origin}: cannot read: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error(
        "no {kind} profile named `{name}` (known: {known}); give a name or a path to a .toml file"
    )]
    NotFound {
        kind: &'static str,
        name: String,
        known: String,
    },
}

/// The text of a profile and where it came from (a path, or `embedded:<name>`).
#[derive(Debug, Clone)]
pub struct ProfileText {
    pub origin: String,
    pub text: String,
}

fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".toml")
}

/// Find a profile's text by name or path, in the order given in the module docs.
pub fn find(kind: Kind, name_or_path: &str) -> Result<ProfileText, ProfileError> {
    let read = |p: &Path| -> Result<ProfileText, ProfileError> {
        std::fs::read_to_string(p)
            .map(|text| ProfileText {
                origin: p.display().to_string(),
                text,
            })
            .map_err(|source| ProfileError::Io {
                origin: p.display().to_string(),
                source,
            })
    };
    if looks_like_path(name_or_path) {
        return read(Path::new(name_or_path));
    }
    let file = format!("{name_or_path}.toml");
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os(kind.env_var()) {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from(kind.dir()));
    for d in dirs {
        let p = d.join(&file);
        if p.is_file() {
            return read(&p);
        }
    }
    if let Some((_, text)) = kind.embedded().iter().find(|(n, _)| *n == name_or_path) {
        return Ok(ProfileText {
            origin: format!("embedded:{}/{file}", kind.dir()),
            text: text.to_string(),
        });
    }
    Err(ProfileError::NotFound {
        kind: kind.noun(),
        name: name_or_path.to_string(),
        known: names(kind).join(", "),
    })
}

/// Names of every profile of a kind: the embedded ones, the local folder's and the override folder's.
pub fn names(kind: Kind) -> Vec<String> {
    let mut out: Vec<String> = kind.embedded().iter().map(|(n, _)| n.to_string()).collect();
    let mut dirs = vec![PathBuf::from(kind.dir())];
    if let Some(d) = std::env::var_os(kind.env_var()) {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "toml") {
                    if let Some(stem) = p.file_stem() {
                        out.push(stem.to_string_lossy().into_owned());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Parse TOML text into `T`, turning serde's message into one that names the origin.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ProfileError> {
    toml::from_str(text).map_err(|e| ProfileError::Syntax {
        origin: origin.to_string(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Parse and resolve a model profile from its text.
pub fn parse_model(text: &str, origin: &str) -> Result<ModelProfile, ProfileError> {
    parse_toml::<RawModelProfile>(text, origin)?.resolve(origin)
}

/// Load and resolve a model profile by name or path.
pub fn load_model(name_or_path: &str) -> Result<ModelProfile, ProfileError> {
    let t = find(Kind::Model, name_or_path)?;
    parse_model(&t.text, &t.origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> String {
        find(Kind::Model, "glam-tiny").unwrap().text
    }

    fn err_of(text: &str) -> String {
        parse_model(text, "bad.toml").unwrap_err().to_string()
    }

    #[test]
    fn glam_tiny_resolves_with_moe_in_layers_1_and_3() {
        let p = load_model("glam-tiny").unwrap();
        assert_eq!(p.d_head, 64);
        let moe: Vec<usize> = (0..p.layers).filter(|&i| p.is_moe_layer(i)).collect();
        assert_eq!(moe, vec![1, 3]);
    }

    #[test]
    fn dense_tiny_has_no_moe_layer() {
        let p = load_model("dense-tiny").unwrap();
        assert_eq!(p.moe_layers(), 0);
        assert!(!p.is_sparse());
    }

    #[test]
    fn an_unknown_name_says_which_kind_of_profile_and_lists_the_known_ones() {
        let e = load_model("no-such-model").unwrap_err().to_string();
        assert!(
            e.starts_with("no model profile named `no-such-model`"),
            "{e}"
        );
        assert!(e.contains("glam-tiny"), "{e}");
        let e = load_hardware("no-such-chip").unwrap_err().to_string();
        assert!(
            e.starts_with("no hardware profile named `no-such-chip`"),
            "{e}"
        );
        assert!(e.contains("h100-sxm"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err_of(&format!("{}\nwidth = 3\n", tiny()));
        assert!(e.contains("bad.toml") && e.contains("width"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = err_of(&tiny().replace("d_model = 256", "d_model = \"wide\""));
        assert!(e.contains("bad.toml") && e.contains("d_model"), "{e}");
    }

    #[test]
    fn zero_size_is_named() {
        let e = err_of(&tiny().replace("layers = 4", "layers = 0"));
        assert!(e.contains("`layers`") && e.contains("0"), "{e}");
    }

    #[test]
    fn top_k_above_experts_is_named() {
        let e = err_of(&tiny().replace("top_k = 2", "top_k = 9"));
        assert!(e.contains("`top_k`") && e.contains("8 experts"), "{e}");
    }

    #[test]
    fn d_model_not_divisible_by_heads_is_named() {
        let e = err_of(&tiny().replace("heads = 4", "heads = 3"));
        assert!(e.contains("`heads`") && e.contains("not divisible"), "{e}");
    }

    #[test]
    fn toml_round_trip_gives_the_same_profile() {
        let p = load_model("glam-tiny").unwrap();
        assert_eq!(parse_model(&p.to_toml(), "x").unwrap(), p);
        assert!(
            !p.to_toml().contains("ffn ="),
            "a plain profile is written as before"
        );
        let gated = parse_model(
            &format!("{}\nffn = \"geglu\"\nexpert_ffn = \"swiglu\"\n", tiny()),
            "x",
        )
        .unwrap();
        assert_eq!(
            (gated.ffn, gated.expert_ffn),
            (FfnKind::Geglu, FfnKind::Swiglu)
        );
        assert_eq!(parse_model(&gated.to_toml(), "x").unwrap(), gated);
    }

    #[test]
    fn feed_forward_kinds_default_to_mlp_and_an_unknown_one_is_named() {
        let p = load_model("glam-tiny").unwrap();
        assert_eq!((p.ffn, p.expert_ffn), (FfnKind::Mlp, FfnKind::Mlp));
        let e = err_of(&format!("{}\nexpert_ffn = \"reglu\"\n", tiny()));
        assert!(
            e.contains("bad.toml") && e.contains("`expert_ffn`") && e.contains("reglu"),
            "{e}"
        );
        let e = err_of(&format!("{}\nffn = \"GEGLU\"\n", tiny()));
        assert!(
            e.contains("`ffn`") && e.contains("expected mlp, geglu or swiglu"),
            "{e}"
        );
    }

    #[test]
    fn expert_override_renames_and_revalidates() {
        let p = load_model("glam-tiny").unwrap();
        let q = p.with_overrides(Some(64), None).unwrap();
        assert_eq!(
            (q.experts, q.top_k, q.name.as_str()),
            (64, 2, "glam-tiny-e64")
        );
        assert!(p.with_overrides(Some(0), None).is_err());
    }
}
