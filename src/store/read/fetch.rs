//! The FETCHes that bring a read's blocks: one pipeline of partial `BODY.PEEK[]` FETCHes per
//! read (the blocks it needs first, then those only ahead of need), on a session selected at
//! the message's generation; NIL and empty answers are told apart from a message that is gone,
//! and a retry after a failed connection asks only for the blocks the read needs.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::imap::codec::{Command, FetchAttr};
use crate::imap::pool::Retry;
use crate::imap::session::{Access, Session};
use crate::imap::types::{message_bodies, SequenceSet, Uid};
use crate::store::ids::MessageRef;
use crate::store::Account;

use super::FetchedBlock;

/// What a pipeline of block FETCHes gave: the blocks that came back, and the (UID, block)
/// answered with a NIL body.
type Fetched = (Vec<FetchedBlock>, Vec<(Uid, u64)>);

impl Account {
    /// Fetch blocks in one round trip (pipelined partial FETCHes). Every `required` block (of
    /// `msg`) must come back, or the whole fetch fails; `optional` ones (readahead, walk) are
    /// kept when they come.
    pub(super) fn fetch_blocks(
        &self,
        msg: MessageRef,
        required: &[(Uid, u64)],
        optional: &[(Uid, u64)],
    ) -> Result<Vec<FetchedBlock>> {
        let name = self.require_name(msg.mailbox)?;
        let bs = self.opts.block_size;
        let cmd = |&(u, b): &(Uid, u64)| Command::Fetch {
            uid: true,
            set: SequenceSet::single(u.get()),
            attrs: vec![
                FetchAttr::Uid,
                FetchAttr::BodyPeek {
                    section: String::new(),
                    partial: Some((b * bs, u32::try_from(bs).unwrap_or(u32::MAX))),
                },
            ],
            changed_since: None,
        };
        let all: Vec<Command> = required.iter().chain(optional).map(cmd).collect();
        let mut attempt = 0;
        let result = self.pool.with_session(Some(&name), Retry::Idempotent, |s| {
            // A retry (the connection failed under the pipeline: a server that throttles
            // and then closes, say) asks only for what the read needs: what was only ahead
            // of need must not make the read fail.
            attempt += 1;
            let cmds = if attempt == 1 {
                &all[..]
            } else {
                &all[..required.len()]
            };
            s.select_at(&name, msg.validity, Access::Read)?;
            let (mut out, _) = run_fetches(s, cmds, required.len(), bs)?;
            if !out.iter().any(|(k, _)| *k == required[0]) {
                // Nothing for the message, or NIL (Dovecot's answer for a message another
                // client expunged since this session's last sync point): gone, or appended
                // after that point. Sync, then ask once more for the blocks that are needed.
                s.run(Command::Noop)?;
                let (again, nil) = run_fetches(s, &cmds[..required.len()], required.len(), bs)?;
                if nil.contains(&required[0]) {
                    // Still there, still no body: a server fault, not a missing message.
                    return Err(Error::BadReply {
                        command: "FETCH",
                        what: format!("the server answered NIL for the body of UID {}", msg.uid),
                    });
                }
                out.extend(again);
            }
            Ok(out)
        });
        let out = match result {
            Err(e @ (Error::NoMessage(_) | Error::ValidityChanged { .. })) => {
                self.forget_message(msg);
                return Err(e);
            }
            other => other?,
        };
        if !out.iter().any(|(k, _)| *k == required[0]) {
            self.forget_message(msg);
            return Err(Error::NoMessage(format!("UID {} in {name}", msg.uid)));
        }
        Ok(out)
    }
}

/// Run block FETCHes as one pipeline; the first `required` must succeed. Returns the blocks
/// that came back, and those answered with a NIL body: no data, never an empty block.
fn run_fetches(s: &mut Session, cmds: &[Command], required: usize, bs: u64) -> Result<Fetched> {
    let mut untagged = Vec::new();
    for (i, r) in s.pipeline(cmds)?.into_iter().enumerate() {
        match r {
            Ok(done) => untagged.extend(done.untagged),
            Err(e) if i < required => return Err(e),
            Err(e) => log::debug!("prefetch failed: {e}"),
        }
    }
    let mut nil = Vec::new();
    let mut out = Vec::new();
    for u in untagged {
        let Some((uid, bodies)) = message_bodies(u) else {
            continue;
        };
        for (origin, data) in bodies {
            let origin = origin.unwrap_or(0);
            let Some(data) = data else {
                log::debug!("the server answered NIL for the body of UID {uid} at {origin}");
                nil.push((uid, origin / bs));
                continue;
            };
            if origin % bs != 0 {
                return Err(Error::BadReply {
                    command: "FETCH",
                    what: format!("a block at origin {origin}"),
                });
            }
            if data.len() as u64 > bs {
                return Err(Error::BadReply {
                    command: "FETCH",
                    what: "more than was asked".into(),
                });
            }
            out.push(((uid, origin / bs), Arc::from(data)));
        }
    }
    Ok((out, nil))
}
