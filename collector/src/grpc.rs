//! gRPC front end: the `Collector` service (unary batches and client
//! streaming, for inferences and labels), with the same validation and the
//! same acknowledgement rule as HTTP. Errors map to one `tonic::Code` each.
//!
//! The hot path never decodes events into owned messages: the service is
//! served by hand ([`CollectorServer`]) with a codec that hands over each
//! request message's bytes as received; [`crate::wire`] finds the events in
//! them and reads each into a borrowed view for validation, and the valid
//! events' own bytes (plus their defaults) go to Kafka.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use mlwatch_proto::v1::{IngestResponse, Rejection as PbRejection};
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::{ClientStreamingService, Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{Batch, IngestError, Ingestor, Outcome, WireBatch, WireEvent, span};
use crate::validate::{self, InferenceRef, Rejection};
use crate::wire;

/// The `mlwatch.v1.Collector` service.
pub struct CollectorService {
    ingestor: Ingestor,
}

impl CollectorService {
    pub fn new(ingestor: Ingestor) -> Self {
        Self { ingestor }
    }
}

fn to_status(error: IngestError) -> Status {
    let mut status = Status::new(error.grpc_code(), error.to_string());
    if let IngestError::AllRejected(rejected) = &error
        && let Some(first) = rejected.first()
    {
        status = Status::invalid_argument(format!(
            "all {} events rejected; first: index {} field {:?}: {}",
            rejected.len(),
            first.index,
            first.field,
            first.reason
        ));
    }
    if let Some(secs) = error.retry_after_secs()
        && let Ok(v) = secs.to_string().parse()
    {
        status.metadata_mut().insert("retry-after", v);
    }
    status
}

fn to_response(outcome: Outcome) -> IngestResponse {
    IngestResponse {
        accepted: u32::try_from(outcome.accepted).unwrap_or(u32::MAX),
        rejected: outcome.rejected.into_iter().map(pb_rejection).collect(),
        handled_messages: 0,
    }
}

/// A stream that failed after `handled` messages: the error's status, with
/// what was done before it in its details and metadata, so the client
/// resends exactly the rest.
fn partial_failure(error: Status, so_far: Outcome, handled: usize) -> Status {
    let mut done = to_response(so_far);
    done.handled_messages = u32::try_from(handled).unwrap_or(u32::MAX);
    let message = format!(
        "{} (after {handled} stream messages handled, {} events accepted: resend from message {handled})",
        error.message(),
        done.accepted
    );
    let details = prost::bytes::Bytes::from(prost::Message::encode_to_vec(&done));
    let mut status = Status::with_details_and_metadata(error.code(), message, details, error.metadata().clone());
    if let Ok(v) = handled.to_string().parse() {
        status.metadata_mut().insert("mlwatch-accepted-messages", v);
    }
    status
}

fn pb_rejection(r: Rejection) -> PbRejection {
    PbRejection {
        index: u32::try_from(r.index).unwrap_or(u32::MAX),
        field: r.field,
        reason: r.reason,
    }
}

/// Which events a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Inferences,
    Labels,
}

impl CollectorService {
    fn check_len(&self, n: usize) -> Result<(), Status> {
        let max = self.ingestor.limits.max_events_per_request;
        if n > max {
            return Err(to_status(IngestError::TooLarge(format!(
                "too many events: {n} > {max}"
            ))));
        }
        Ok(())
    }

    /// Finds and validates the events of one request message; `offset` is
    /// the index of its first event (streams count across messages).
    fn split(&self, kind: Kind, bytes: Bytes, offset: usize, unary: bool) -> Result<(Batch, Vec<Rejection>), Status> {
        let ranges = wire::events(&bytes).map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
        if unary {
            self.check_len(ranges.len())?;
        }
        let now = mlwatch_common::now_ms();
        let limits = &self.ingestor.limits;
        let mut events = Vec::with_capacity(ranges.len());
        let mut rejected = Vec::new();
        let mut view = InferenceRef::default();
        for (i, range) in ranges.into_iter().enumerate() {
            let event = &bytes[range.clone()];
            let checked = match kind {
                Kind::Inferences => wire::inference(event, &mut view)
                    .and_then(|()| validate::check_inference_ref(&view, limits, now))
                    .map(|fill| WireEvent {
                        range,
                        model: span(&bytes, view.model),
                        model_version: span(&bytes, view.model_version),
                        endpoint: span(&bytes, view.endpoint),
                        error: view.status == mlwatch_proto::v1::InferenceStatus::Error as i32,
                        latency_ms: view.latency_ms,
                        batch_size: if fill.batch_size { 1 } else { view.batch_size },
                        score: view.prediction.as_ref().and_then(|p| p.score),
                        fill,
                    }),
                Kind::Labels => wire::label(event).and_then(|label| {
                    validate::check_label_ref(&label, limits, now).map(|fill| WireEvent {
                        range,
                        model: span(&bytes, label.model),
                        model_version: 0..0,
                        endpoint: 0..0,
                        error: false,
                        latency_ms: 0.0,
                        batch_size: 0,
                        score: None,
                        fill,
                    })
                }),
            };
            match checked {
                Ok(e) => events.push(e),
                Err((field, reason)) => rejected.push(Rejection::new(offset + i, field, reason)),
            }
        }
        drop(view);
        let batch = Batch::Wire(WireBatch {
            labels: kind == Kind::Labels,
            bytes,
            events,
        });
        Ok((batch, rejected))
    }

    async fn unary(&self, kind: Kind, bytes: Bytes) -> Result<IngestResponse, Status> {
        let (batch, rejected) = self.split(kind, bytes, 0, true)?;
        self.ingestor
            .publish(batch, rejected)
            .await
            .map(to_response)
            .map_err(to_status)
    }

    /// Publishes every message of a stream as it arrives; the summary counts
    /// all of them. A broker failure ends the stream with its status, and
    /// the messages acknowledged before it stay acknowledged.
    async fn stream(&self, kind: Kind, mut stream: Streaming<Bytes>) -> Result<IngestResponse, Status> {
        let mut total = Outcome {
            accepted: 0,
            rejected: Vec::new(),
        };
        let mut offset = 0usize;
        let mut handled = 0usize;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Err(partial_failure(e, total, handled)),
            };
            let (batch, rejected) = match self.split(kind, message, offset, false) {
                Ok(split) => split,
                Err(e) => return Err(partial_failure(e, total, handled)),
            };
            offset += match &batch {
                Batch::Wire(w) => w.events.len(),
                _ => 0,
            } + rejected.len();
            match self.ingestor.publish(batch, rejected).await {
                Ok(o) => {
                    total.accepted += o.accepted;
                    total.rejected.extend(o.rejected);
                }
                Err(IngestError::AllRejected(r)) => total.rejected.extend(r),
                Err(e) => return Err(partial_failure(to_status(e), total, handled)),
            }
            handled += 1;
        }
        let mut answer = to_response(total);
        answer.handled_messages = u32::try_from(handled).unwrap_or(u32::MAX);
        Ok(answer)
    }
}

/// A codec whose decoder hands over each request message's bytes as
/// received (no copy: tonic's buffer is split off) and whose encoder is
/// prost's, for the `IngestResponse`.
#[derive(Default)]
struct RawCodec;

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = IngestResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<IngestResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct Unary(Arc<CollectorService>, Kind);

impl UnaryService<Bytes> for Unary {
    type Response = IngestResponse;
    type Future = BoxFuture<Response<IngestResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (service, kind) = (self.0.clone(), self.1);
        Box::pin(async move { service.unary(kind, request.into_inner()).await.map(Response::new) })
    }
}

struct ClientStream(Arc<CollectorService>, Kind);

impl ClientStreamingService<Bytes> for ClientStream {
    type Response = IngestResponse;
    type Future = BoxFuture<Response<IngestResponse>, Status>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (service, kind) = (self.0.clone(), self.1);
        Box::pin(async move { service.stream(kind, request.into_inner()).await.map(Response::new) })
    }
}

/// The `mlwatch.v1.Collector` gRPC service, wire-compatible with the one
/// generated from collector.proto, served with `RawCodec`.
#[derive(Clone)]
pub struct CollectorServer {
    service: Arc<CollectorService>,
    max_decoding_message_size: usize,
}

impl CollectorServer {
    pub fn new(service: CollectorService, max_decoding_message_size: usize) -> Self {
        Self {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for CollectorServer {
    const NAME: &'static str = mlwatch_proto::v1::collector_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for CollectorServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = match request.uri().path() {
            "/mlwatch.v1.Collector/IngestInferences" => Some((Kind::Inferences, false)),
            "/mlwatch.v1.Collector/IngestLabels" => Some((Kind::Labels, false)),
            "/mlwatch.v1.Collector/StreamInferences" => Some((Kind::Inferences, true)),
            "/mlwatch.v1.Collector/StreamLabels" => Some((Kind::Labels, true)),
            _ => None,
        };
        let service = self.service.clone();
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let Some((kind, streaming)) = method else {
                return Ok(Status::unimplemented("unknown method").into_http());
            };
            let mut grpc = Grpc::new(RawCodec).apply_max_message_size_config(Some(max), None);
            Ok(if streaming {
                grpc.client_streaming(ClientStream(service, kind), request).await
            } else {
                grpc.unary(Unary(service, kind), request).await
            })
        })
    }
}

/// The gRPC side of bearer-token authentication: checks the
/// `authorization` metadata of every call to the `Collector` service.
pub fn authenticator(
    tokens: crate::security::Tokens,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let auth = request.metadata().get("authorization").map(|v| v.as_bytes());
        if tokens.allows(auth) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or invalid bearer token"))
        }
    }
}
