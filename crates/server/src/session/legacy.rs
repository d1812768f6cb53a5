//! Tutorial-style sessions: a length, a JSON header and the bytes, file
//! after file until the client closes. Such clients never read, so nothing
//! is ever written back.

use std::time::Instant;

use ferry_proto::path::{canonical, escape_for_display};
use ferry_proto::{LegacyHeader, OnClash};
use tracing::debug;

use super::{Session, SessionError};
use crate::body::{BodyError, Digest, Received};
use crate::commit::{Job, Pending, Receipt};
use crate::storage::{Finished, StoreError};

impl<'a> Session<'a> {
    /// Tutorial-style uploads: header, bytes, header, bytes, close.
    pub(super) fn legacy(&mut self, mut header: LegacyHeader) -> Result<(), SessionError> {
        debug!(peer = %self.peer, "legacy client");
        loop {
            self.receive_legacy(&header)?;
            match self.next_frame()? {
                Some(body) => header = LegacyHeader::parse(&body)?,
                None => return Ok(()),
            }
        }
    }

    fn receive_legacy(&mut self, header: &LegacyHeader) -> Result<(), SessionError> {
        self.make_room()?;
        let started = Instant::now();
        let name = &canonical(&header.filename).into_owned();
        let refused = |reason| SessionError::Refused {
            name: escape_for_display(name),
            reason,
        };
        // A tutorial client cannot be told about the limit: past it, the
        // connection ends with the reason logged.
        self.count_file().map_err(refused)?;
        let (parts, mut upload) = self.start_file(name, header.size).map_err(refused)?;
        let digest = match self.receive_body(&mut upload, name, header.size, Digest::Incoming) {
            Ok(Received::Known(d)) => d,
            // Tutorial clients never resume; were one to, wait here.
            Ok(Received::Trailing(trailing)) => trailing
                .finish(&self.shared.dropping)
                .map_err(|e| refused(StoreError::Io(e)))?,
            Err(BodyError::Store(e)) => return Err(refused(e)),
            Err(BodyError::Wire(e)) => return Err(e),
        };
        self.finish_metadata(&mut upload, None);
        self.queue(Job::File(Pending {
            receipt: Receipt {
                id: None,
                path: name.clone(),
                size: header.size,
                took: started.elapsed(),
                digest,
            },
            finished: Finished {
                upload,
                parts,
                policy: OnClash::Rename,
                digest,
            },
            check: None,
        }))
    }
}
