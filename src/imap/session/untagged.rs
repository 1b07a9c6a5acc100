//! Untagged responses: kept for the command that waits, and applied to the connection and
//! mailbox state (capabilities, BYE, UIDVALIDITY, EXISTS, EXPUNGE, ...) wherever they arrive.

use super::*;

impl Session {
    /// Apply an untagged response and keep it for the waiter, within the backlog cap: past
    /// it, responses are still applied to the mailbox state but dropped, and the command
    /// they belong to fails with [`Error::TooLarge`].
    pub(super) fn absorb(&mut self, u: Untagged) {
        self.observe(&u);
        let cost = Limits::held_cost(self.decoder.last_frame_len() as u64);
        if self.overflowed || self.untagged_bytes + cost > self.limits.backlog_cap() {
            if !self.overflowed {
                log::warn!(
                    "the server's responses to one command exceed {} bytes; dropping them",
                    self.limits.backlog_cap()
                );
            }
            self.overflowed = true;
            self.untagged.clear();
            self.untagged_bytes = 0;
            return;
        }
        self.untagged_bytes += cost;
        self.untagged.push(u);
    }

    /// Keep the completion of a command someone else waits for (pipelining). Only tags in
    /// flight get here (see [`Session::poll_response`]), so this is bounded by what we sent.
    pub(super) fn keep_completion(&mut self, t: Tagged) {
        self.done.insert(t.tag.clone(), t);
    }

    /// Apply an untagged response to the connection and mailbox state.
    pub(super) fn observe(&mut self, u: &Untagged) {
        match u {
            Untagged::Capability(c) => self.capabilities = c.clone(),
            Untagged::Status {
                status: Status::Bye,
                text,
            } => self.bye = Some(text.text.clone()),
            Untagged::Status { text, .. } => {
                if let Some(sel) = self.selected.as_mut() {
                    match &text.code {
                        Some(Code::UidValidity(v)) => {
                            if sel.uidvalidity.is_some_and(|old| old != *v) {
                                sel.changed = true;
                            }
                            sel.uidvalidity = Some(*v);
                        }
                        Some(Code::UidNext(n)) => sel.uidnext = Some(*n),
                        Some(Code::HighestModSeq(m)) => sel.highest_modseq = Some(*m),
                        Some(Code::ReadOnly) => sel.read_only = true,
                        Some(Code::PermanentFlags(f)) => sel.permanent_flags = Some(f.clone()),
                        _ => {}
                    }
                }
                if text.code == Some(Code::Alert) {
                    log::warn!("server alert: {}", printable(&text.text));
                }
            }
            Untagged::Exists(n) => {
                if let Some(sel) = self.selected.as_mut() {
                    sel.changed |= *n != sel.exists;
                    sel.exists = *n;
                }
            }
            Untagged::Expunge(_) | Untagged::Vanished { .. } => {
                if let Some(sel) = self.selected.as_mut() {
                    match u {
                        Untagged::Expunge(_) => sel.exists = sel.exists.saturating_sub(1),
                        // VANISHED (not EARLIER) replaces EXPUNGE once QRESYNC is enabled.
                        Untagged::Vanished {
                            earlier: false,
                            uids,
                        } => {
                            let n = uids.iter_capped(u32::MAX - 1, sel.exists as usize).count();
                            sel.exists = sel.exists.saturating_sub(n as u32);
                        }
                        _ => {}
                    }
                    sel.changed = true;
                }
            }
            Untagged::Enabled(caps) => {
                for c in caps {
                    if !self.enabled.iter().any(|e| e.eq_ignore_ascii_case(c)) {
                        self.enabled.push(c.to_ascii_uppercase());
                    }
                }
            }
            _ => {}
        }
    }
}
