//! The registry: names to factories for every kind of part. Configuration chooses by
//! name; a crate (or the plugin host) registers its parts under their names. A name
//! that is not registered is an error that lists the names that are.
//!
//! ```
//! use std::sync::Arc;
//! use dialtone_core::{Config, InsightsSink, Registry, MemoryInsightsSink};
//!
//! let mut registry = Registry::with_builtins();
//! registry.register::<dyn InsightsSink>("memory", |_cfg| Ok(Arc::new(MemoryInsightsSink::new()))).unwrap();
//! let sink = registry.create::<dyn InsightsSink>("memory", &Config::default()).unwrap();
//! let err = registry.create::<dyn InsightsSink>("kafka", &Config::default()).err().unwrap();
//! assert_eq!(err.to_string(), r#"no insights sink named "kafka" is registered; registered: log, memory"#);
//! # let _ = sink;
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{ErrorCode, VoiceError};
use crate::insights::{InsightsSink, LogInsightsSink};
use crate::parts::{AudioBackend, AudioCodec, MediaEngine, SignalingTransport};

/// Makes a part from the configuration.
pub type Factory<T> = Arc<dyn Fn(&Config) -> Result<Arc<T>, VoiceError> + Send + Sync>;

/// Why the registry refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Nothing is registered under that name.
    #[error("no {kind} named {name:?} is registered; registered: {}", list(.registered))]
    NotRegistered {
        /// The kind of part.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names that are registered.
        registered: Vec<String>,
    },
    /// Something is already registered under that name.
    #[error("a {kind} named {name:?} is already registered")]
    AlreadyRegistered {
        /// The kind of part.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// The factory failed.
    #[error("the {kind} {name:?} could not be created: {error}")]
    Factory {
        /// The kind of part.
        kind: &'static str,
        /// The name.
        name: String,
        /// Its error.
        error: VoiceError,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl From<RegistryError> for VoiceError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Factory { error, .. } => error,
            other => VoiceError::new(ErrorCode::UnknownError, other.to_string()),
        }
    }
}

/// The factories of one kind of part.
pub struct Slot<T: ?Sized> {
    factories: BTreeMap<String, Factory<T>>,
}

impl<T: ?Sized> Default for Slot<T> {
    fn default() -> Self {
        Slot { factories: BTreeMap::new() }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A kind of part the registry holds: `dyn SignalingTransport`, `dyn MediaEngine`,
/// `dyn AudioCodec`, `dyn AudioBackend` or `dyn InsightsSink`.
pub trait Part: sealed::Sealed + Send + Sync + 'static {
    /// The kind's name in messages, for example `audio codec`.
    const KIND: &'static str;
    #[doc(hidden)]
    fn slot(r: &Registry) -> &Slot<Self>;
    #[doc(hidden)]
    fn slot_mut(r: &mut Registry) -> &mut Slot<Self>;
}

macro_rules! part {
    ($t:ty, $field:ident, $kind:literal) => {
        impl sealed::Sealed for $t {}
        impl Part for $t {
            const KIND: &'static str = $kind;
            fn slot(r: &Registry) -> &Slot<Self> {
                &r.$field
            }
            fn slot_mut(r: &mut Registry) -> &mut Slot<Self> {
                &mut r.$field
            }
        }
    };
}

part!(dyn SignalingTransport, transports, "signaling transport");
part!(dyn MediaEngine, media_engines, "media engine");
part!(dyn AudioCodec, codecs, "audio codec");
part!(dyn AudioBackend, audio_backends, "audio backend");
part!(dyn InsightsSink, insights_sinks, "insights sink");

/// Names to factories, one table per kind of part.
#[derive(Default)]
pub struct Registry {
    transports: Slot<dyn SignalingTransport>,
    media_engines: Slot<dyn MediaEngine>,
    codecs: Slot<dyn AudioCodec>,
    audio_backends: Slot<dyn AudioBackend>,
    insights_sinks: Slot<dyn InsightsSink>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("transports", &self.names::<dyn SignalingTransport>())
            .field("media_engines", &self.names::<dyn MediaEngine>())
            .field("codecs", &self.names::<dyn AudioCodec>())
            .field("audio_backends", &self.names::<dyn AudioBackend>())
            .field("insights_sinks", &self.names::<dyn InsightsSink>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the parts core itself provides: the `log` insights sink.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        let log: Factory<dyn InsightsSink> = Arc::new(|_| Ok(Arc::new(LogInsightsSink)));
        r.register_factory("log", log).unwrap_or_else(|_| unreachable!("empty registry"));
        r
    }

    /// Registers a factory under `name`; a name already taken for that kind is refused.
    pub fn register<T: Part + ?Sized>(
        &mut self,
        name: &str,
        factory: impl Fn(&Config) -> Result<Arc<T>, VoiceError> + Send + Sync + 'static,
    ) -> Result<(), RegistryError> {
        self.register_factory(name, Arc::new(factory))
    }

    /// Registers an already boxed factory.
    pub fn register_factory<T: Part + ?Sized>(
        &mut self,
        name: &str,
        factory: Factory<T>,
    ) -> Result<(), RegistryError> {
        let slot = T::slot_mut(self);
        if slot.factories.contains_key(name) {
            return Err(RegistryError::AlreadyRegistered { kind: T::KIND, name: name.to_owned() });
        }
        slot.factories.insert(name.to_owned(), factory);
        Ok(())
    }

    /// Whether `name` is registered for that kind.
    pub fn contains<T: Part + ?Sized>(&self, name: &str) -> bool {
        T::slot(self).factories.contains_key(name)
    }

    /// The registered names of that kind, sorted.
    pub fn names<T: Part + ?Sized>(&self) -> Vec<String> {
        T::slot(self).factories.keys().cloned().collect()
    }

    /// Creates the part registered as `name`.
    pub fn create<T: Part + ?Sized>(&self, name: &str, config: &Config) -> Result<Arc<T>, RegistryError> {
        let factory = T::slot(self).factories.get(name).ok_or_else(|| RegistryError::NotRegistered {
            kind: T::KIND,
            name: name.to_owned(),
            registered: self.names::<T>(),
        })?;
        factory(config).map_err(|error| RegistryError::Factory {
            kind: T::KIND,
            name: name.to_owned(),
            error,
        })
    }

    /// The media engine the configuration names (`media.engine`).
    pub fn configured_media_engine(&self, config: &Config) -> Result<Arc<dyn MediaEngine>, RegistryError> {
        self.create(&config.media.engine, config)
    }

    /// The audio backend the configuration names (`audio.backend`).
    pub fn configured_audio_backend(&self, config: &Config) -> Result<Arc<dyn AudioBackend>, RegistryError> {
        self.create(&config.audio.backend, config)
    }

    /// The insights sink the configuration names (`insights.sink`).
    pub fn configured_insights_sink(&self, config: &Config) -> Result<Arc<dyn InsightsSink>, RegistryError> {
        self.create(&config.insights.sink, config)
    }

    /// The signaling transport for the configured server URL: `client.transport` if
    /// set, else the transport registered for the URL's scheme (`ws`, `wss`, `sip`,
    /// `sips`).
    pub fn configured_transport(
        &self,
        config: &Config,
    ) -> Result<Arc<dyn SignalingTransport>, RegistryError> {
        let name = match &config.client.transport {
            Some(t) => t.clone(),
            None => config.client.server.split(':').next().unwrap_or_default().to_ascii_lowercase(),
        };
        self.create(&name, config)
    }

    /// The codecs of `codecs.preferred`, in that order (names match case-insensitively).
    pub fn configured_codecs(&self, config: &Config) -> Result<Vec<Arc<dyn AudioCodec>>, RegistryError> {
        let names = self.names::<dyn AudioCodec>();
        config
            .codecs
            .preferred
            .iter()
            .map(|want| {
                let name =
                    names.iter().find(|n| n.eq_ignore_ascii_case(want)).map_or(want.as_str(), |n| n.as_str());
                self.create::<dyn AudioCodec>(name, config)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parts::{AudioDecoder, AudioEncoder, CodecDescriptor, EncoderSettings};

    struct FakeCodec(CodecDescriptor);
    impl AudioCodec for FakeCodec {
        fn descriptor(&self) -> &CodecDescriptor {
            &self.0
        }
        fn new_encoder(&self, _: &EncoderSettings) -> Result<Box<dyn AudioEncoder>, VoiceError> {
            Err(VoiceError::new(ErrorCode::UnknownError, "fake"))
        }
        fn new_decoder(&self) -> Result<Box<dyn AudioDecoder>, VoiceError> {
            Err(VoiceError::new(ErrorCode::UnknownError, "fake"))
        }
    }

    fn codec(
        name: &'static str,
    ) -> impl Fn(&Config) -> Result<Arc<dyn AudioCodec>, VoiceError> + Send + Sync {
        move |_| Ok(Arc::new(FakeCodec(CodecDescriptor::new(name, 8000, 8000, 1))) as Arc<dyn AudioCodec>)
    }

    #[test]
    fn configuration_chooses_codecs_by_name_in_order() {
        let mut r = Registry::with_builtins();
        r.register::<dyn AudioCodec>("opus", codec("opus")).unwrap();
        r.register::<dyn AudioCodec>("PCMU", codec("PCMU")).unwrap();
        r.register::<dyn AudioCodec>("G722", codec("G722")).unwrap();
        let mut config = Config::default();
        config.codecs.preferred = vec!["g722".into(), "pcmu".into()];
        let names: Vec<String> =
            r.configured_codecs(&config).unwrap().iter().map(|c| c.descriptor().name.clone()).collect();
        assert_eq!(names, ["G722", "PCMU"]);
        config.codecs.preferred = vec!["g729".into()];
        let e = r.configured_codecs(&config).err().unwrap();
        assert_eq!(
            e.to_string(),
            r#"no audio codec named "g729" is registered; registered: G722, PCMU, opus"#
        );
    }

    #[test]
    fn duplicate_names_are_refused_per_kind() {
        let mut r = Registry::with_builtins();
        r.register::<dyn AudioCodec>("opus", codec("opus")).unwrap();
        let e = r.register::<dyn AudioCodec>("opus", codec("opus")).unwrap_err();
        assert_eq!(e, RegistryError::AlreadyRegistered { kind: "audio codec", name: "opus".into() });
        // the same name in another kind is fine
        r.register::<dyn InsightsSink>("opus", |_| Ok(Arc::new(LogInsightsSink))).unwrap();
        assert!(r.contains::<dyn InsightsSink>("log"));
    }

    #[test]
    fn missing_parts_name_what_is_registered() {
        let r = Registry::with_builtins();
        let config = Config::default();
        let e = r.configured_media_engine(&config).err().unwrap();
        assert_eq!(e.to_string(), r#"no media engine named "rtp" is registered; registered: none"#);
        let e = r.configured_transport(&config).err().unwrap();
        assert!(e.to_string().contains(r#"signaling transport named "ws""#), "{e}");
        assert!(r.configured_insights_sink(&config).is_ok());
        let v: VoiceError = r.configured_audio_backend(&config).err().unwrap().into();
        assert_eq!(v.code(), 31000);
        assert!(v.message().contains("audio backend"));
    }

    #[test]
    fn factory_errors_keep_their_code() {
        let mut r = Registry::new();
        r.register::<dyn InsightsSink>("broken", |_| Err(VoiceError::from_kind(ErrorCode::ConnectionError)))
            .unwrap();
        let e = r.create::<dyn InsightsSink>("broken", &Config::default()).err().unwrap();
        assert_eq!(VoiceError::from(e).code(), 31005);
    }
}
