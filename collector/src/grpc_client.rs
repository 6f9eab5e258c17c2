//! Sending ingest requests that are already encoded: a client that keeps
//! events as protobuf bytes (a replay, a gateway forwarding what model
//! servers sent, a load generator) sends them without decoding them into
//! messages and encoding them again.
//!
//! ```no_run
//! # async fn demo(bytes: bytes::Bytes) -> anyhow::Result<()> {
//! use mlwatch_collector::grpc_client::{EncodedClient, INFERENCES};
//! let mut client = EncodedClient::connect("http://127.0.0.1:9090").await?;
//! let answer = client.send(INFERENCES, bytes).await?;
//! println!("{} accepted", answer.accepted);
//! # Ok(()) }
//! ```

use mlwatch_proto::v1::IngestResponse;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// `Collector.IngestInferences`: the body is an encoded `IngestInferencesRequest`.
pub const INFERENCES: &str = "/mlwatch.v1.Collector/IngestInferences";
/// `Collector.IngestLabels`: the body is an encoded `IngestLabelsRequest`.
pub const LABELS: &str = "/mlwatch.v1.Collector/IngestLabels";

/// A codec whose requests are bytes sent as they are and whose answers are
/// `IngestResponse`s.
#[derive(Clone, Copy, Default)]
pub struct PreEncoded;

/// Writes the request bytes unchanged.
pub struct BytesEncoder;

impl tonic::codec::Encoder for BytesEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Self::Error> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for PreEncoded {
    type Encode = bytes::Bytes;
    type Decode = IngestResponse;
    type Encoder = BytesEncoder;
    type Decoder = tonic_prost::ProstDecoder<IngestResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut tonic_prost::ProstCodec::<(), IngestResponse>::default())
    }
}

/// A gRPC connection to the collector for encoded requests (HTTP/2 windows
/// sized for batches of thousands of events).
#[derive(Clone)]
pub struct EncodedClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EncodedClient {
    pub async fn connect(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_string())?
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect()
            .await?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20),
        })
    }

    /// Sends one encoded request to `path` ([`INFERENCES`] or [`LABELS`]).
    pub async fn send(&mut self, path: &'static str, body: bytes::Bytes) -> Result<IngestResponse, tonic::Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("grpc channel: {e}")))?;
        let answer = self
            .grpc
            .unary(tonic::Request::new(body), PathAndQuery::from_static(path), PreEncoded)
            .await?;
        Ok(answer.into_inner())
    }
}
