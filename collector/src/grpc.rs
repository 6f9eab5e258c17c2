//! gRPC front end: the `Collector` service (unary batches and client
//! streaming, for inferences and labels), with the same validation and the
//! same acknowledgement rule as HTTP. Errors map to one `tonic::Code` each.

use mlwatch_proto::v1::collector_server::Collector;
use mlwatch_proto::v1::{IngestInferencesRequest, IngestLabelsRequest, IngestResponse, Rejection as PbRejection};
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::{Batch, IngestError, Ingestor, Outcome};
use crate::validate::{self, Rejection};

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
    }
}

fn pb_rejection(r: Rejection) -> PbRejection {
    PbRejection {
        index: u32::try_from(r.index).unwrap_or(u32::MAX),
        field: r.field,
        reason: r.reason,
    }
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

    fn inferences(&self, events: Vec<mlwatch_proto::InferenceEvent>, offset: usize) -> (Batch, Vec<Rejection>) {
        let now = mlwatch_common::now_ms();
        let mut ok = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (i, mut e) in events.into_iter().enumerate() {
            match validate::inference_proto(offset + i, &mut e, &self.ingestor.limits, now) {
                Ok(()) => ok.push(e),
                Err(r) => rejected.push(r),
            }
        }
        (Batch::Inferences(ok), rejected)
    }

    fn labels(&self, events: Vec<mlwatch_proto::LabelEvent>, offset: usize) -> (Batch, Vec<Rejection>) {
        let now = mlwatch_common::now_ms();
        let mut ok = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (i, mut e) in events.into_iter().enumerate() {
            match validate::label_proto(offset + i, &mut e, &self.ingestor.limits, now) {
                Ok(()) => ok.push(e),
                Err(r) => rejected.push(r),
            }
        }
        (Batch::Labels(ok), rejected)
    }

    /// Publishes every batch of a stream as it arrives; the summary counts
    /// all of them. A broker failure ends the stream with its status, and
    /// the batches acknowledged before it stay acknowledged.
    async fn stream<M>(
        &self,
        mut stream: Streaming<M>,
        split: impl Fn(&Self, M, usize) -> (Batch, Vec<Rejection>),
    ) -> Result<IngestResponse, Status> {
        let mut total = Outcome {
            accepted: 0,
            rejected: Vec::new(),
        };
        let mut offset = 0usize;
        while let Some(message) = stream.message().await? {
            let (batch, rejected) = split(self, message, offset);
            offset += match &batch {
                Batch::Inferences(v) => v.len(),
                Batch::Labels(v) => v.len(),
            } + rejected.len();
            match self.ingestor.publish(batch, rejected).await {
                Ok(o) => {
                    total.accepted += o.accepted;
                    total.rejected.extend(o.rejected);
                }
                Err(IngestError::AllRejected(r)) => total.rejected.extend(r),
                Err(e) => return Err(to_status(e)),
            }
        }
        Ok(to_response(total))
    }
}

#[tonic::async_trait]
impl Collector for CollectorService {
    async fn ingest_inferences(
        &self,
        request: Request<IngestInferencesRequest>,
    ) -> Result<Response<IngestResponse>, Status> {
        let events = request.into_inner().events;
        self.check_len(events.len())?;
        let (batch, rejected) = self.inferences(events, 0);
        self.ingestor
            .publish(batch, rejected)
            .await
            .map(|o| Response::new(to_response(o)))
            .map_err(to_status)
    }

    async fn ingest_labels(&self, request: Request<IngestLabelsRequest>) -> Result<Response<IngestResponse>, Status> {
        let events = request.into_inner().events;
        self.check_len(events.len())?;
        let (batch, rejected) = self.labels(events, 0);
        self.ingestor
            .publish(batch, rejected)
            .await
            .map(|o| Response::new(to_response(o)))
            .map_err(to_status)
    }

    async fn stream_inferences(
        &self,
        request: Request<Streaming<IngestInferencesRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        self.stream(request.into_inner(), |s, m: IngestInferencesRequest, off| {
            s.inferences(m.events, off)
        })
        .await
        .map(Response::new)
    }

    async fn stream_labels(
        &self,
        request: Request<Streaming<IngestLabelsRequest>>,
    ) -> Result<Response<IngestResponse>, Status> {
        self.stream(request.into_inner(), |s, m: IngestLabelsRequest, off| {
            s.labels(m.events, off)
        })
        .await
        .map(Response::new)
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
