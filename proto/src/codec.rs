//! The protobuf codec of every `strata.v1` service and client: `tonic-prost`'s, except
//! that a message that does not decode (a string that is not UTF-8, a truncated field, a
//! wrong wire type) is INVALID_ARGUMENT, naming what is wrong. `tonic-prost` says INTERNAL,
//! which reads as a server fault and tells the sender nothing to fix.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The codec the generated services and clients use.
#[derive(Debug, Clone)]
pub struct StrataCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for StrataCodec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for StrataCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder {
            inner: ProstDecoder::default(),
        }
    }
}

/// `tonic-prost`'s decoder, with decode errors as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct CheckedDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: prost::Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message"),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
