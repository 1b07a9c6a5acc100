//! Extended attributes.
//!
//! Messages: `user.imap.flags` (read/write: a list replaces the flags, `+\Flag`/`-\Flag`
//! add or remove, removing the attribute clears them), `user.imap.uid`,
//! `user.imap.uidvalidity`, `user.imap.modseq` (CONDSTORE servers), and decoded headers
//! `user.mail.*`. The `user.imap.*` values come from the index (no round trip); `user.mail.*`
//! need the header, fetched once per message and cached.
//!
//! Gmail (X-GM-EXT-1) messages also have `user.gmail.labels` (asked when read; written as
//! `+Label`, `-Label` or a list that replaces, see [`crate::store::labels`]),
//! `user.gmail.msgid` and `user.gmail.thrid`; on RFC 8474 servers (OBJECTID) a message has
//! `user.imap.emailid` and `user.imap.threadid`. These come from the listing.
//!
//! Folders: `user.imap.messages`, `user.imap.unseen`, `user.imap.uidnext`,
//! `user.imap.uidvalidity` (STATUS, asked when read), `user.imap.special-use` (from LIST) and
//! `user.imap.subscribed` (read/write: `1`/`0`, SUBSCRIBE/UNSUBSCRIBE).
//!
//! The mount root: `user.imapfs.stats`, what the mount has done (`key=value` lines).
//!
//! Values are UTF-8 text without a trailing newline.

use std::ffi::OsStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fs::inode::{Ino, InoKind, ROOT};
use crate::fs::ImapFs;
use crate::imap::gmail::Label;
use crate::imap::types::Flag;
use crate::store::index::ObjectId;
use crate::store::labels::LabelEdit;
use crate::store::FlagEdit;

/// The attribute names a message file has, in listing order.
pub const MESSAGE_NAMES: &[&str] = &[
    "user.imap.flags",
    "user.imap.uid",
    "user.imap.uidvalidity",
    "user.imap.modseq",
    "user.mail.subject",
    "user.mail.from",
    "user.mail.to",
    "user.mail.date",
    "user.mail.message-id",
];

/// The attribute names of a Gmail message (X-GM-MSGID known), after [`MESSAGE_NAMES`].
pub const GMAIL_NAMES: &[&str] = &["user.gmail.labels", "user.gmail.msgid", "user.gmail.thrid"];

/// The attribute names of a message with an RFC 8474 EMAILID, after [`MESSAGE_NAMES`].
pub const OBJECTID_NAMES: &[&str] = &["user.imap.emailid", "user.imap.threadid"];

/// The attribute names a folder has.
pub const FOLDER_NAMES: &[&str] = &[
    "user.imap.messages",
    "user.imap.unseen",
    "user.imap.uidnext",
    "user.imap.uidvalidity",
    "user.imap.special-use",
    "user.imap.subscribed",
];

const STATS: &str = "user.imapfs.stats";

impl ImapFs {
    /// The value of attribute `name`, `None` if the inode has no such attribute.
    pub(crate) fn xattr_value(&self, ino: Ino, name: &str) -> Result<Option<Vec<u8>>> {
        let text = match ino.kind() {
            InoKind::Message { .. } => self.message_xattr(ino, name)?,
            InoKind::Dir if ino == ROOT && name == STATS => Some(self.stats()),
            InoKind::Dir => self.folder_xattr(ino, name)?,
            InoKind::Draft(_) => match name {
                "user.imap.flags" => self.draft_flags(ino).map(|f| flag_text(&f)),
                _ => None,
            },
            // Hook: fs::views.
            InoKind::View(v) => self.view_xattr(v, name)?,
        };
        Ok(text.map(String::into_bytes))
    }

    fn message_xattr(&self, ino: Ino, name: &str) -> Result<Option<String>> {
        let (msg, meta) = self.message_of(ino)?;
        Ok(match name {
            "user.imap.flags" => Some(flag_text(&meta.flags)),
            "user.imap.uid" => Some(msg.uid.to_string()),
            "user.imap.uidvalidity" => Some(msg.validity.to_string()),
            "user.imap.modseq" => meta.modseq.map(|m| m.0.to_string()),
            "user.gmail.labels" | "user.gmail.msgid" | "user.gmail.thrid" | "user.imap.emailid"
            | "user.imap.threadid" => {
                let Some(ids) = meta.ids.as_deref() else {
                    return Ok(None);
                };
                let gmail = matches!(ids.message, ObjectId::Gmail(_));
                match (name, gmail) {
                    ("user.gmail.labels", true) => {
                        Some(Label::list_text(&self.account.labels(msg)?))
                    }
                    ("user.gmail.msgid", true) | ("user.imap.emailid", false) => {
                        Some(ids.message.to_string())
                    }
                    ("user.gmail.thrid", true) | ("user.imap.threadid", false) => {
                        ids.thread.as_ref().map(ToString::to_string)
                    }
                    _ => None,
                }
            }
            n if n.starts_with("user.mail.") => {
                let h = self.account.headers(msg)?;
                match n {
                    "user.mail.subject" => h.subject.clone(),
                    "user.mail.from" => h.from.clone(),
                    "user.mail.to" => h.to.clone(),
                    "user.mail.date" => h.date.clone(),
                    "user.mail.message-id" => h.message_id.clone(),
                    _ => None,
                }
            }
            _ => None,
        })
    }

    fn folder_xattr(&self, ino: Ino, name: &str) -> Result<Option<String>> {
        if !FOLDER_NAMES.contains(&name) {
            return Ok(None);
        }
        let Some((id, selectable)) = self.tree.lock().dir(ino).and_then(|n| n.mailbox) else {
            return Ok(None);
        };
        let info = || -> Result<_> {
            let list = self.account.mailboxes(self.opts.dir_ttl)?;
            let mb = self.account.require_name(id)?;
            Ok(list.iter().find(|m| m.name == mb).cloned())
        };
        Ok(match name {
            "user.imap.special-use" => info()?.map(|m| m.special_uses().join(" ")),
            "user.imap.subscribed" => {
                info()?.map(|m| if m.subscribed { "1" } else { "0" }.to_string())
            }
            _ if !selectable => None,
            _ => {
                let st = self.account.status(id)?;
                let v = match name {
                    "user.imap.messages" => st.messages,
                    "user.imap.unseen" => st.unseen,
                    "user.imap.uidnext" => st.uidnext,
                    _ => st.uidvalidity.map(|v| v.get()),
                };
                v.map(|n| n.to_string())
            }
        })
    }

    /// The NUL-separated names, as listxattr returns them.
    pub(crate) fn xattr_names(&self, ino: Ino) -> Result<Vec<u8>> {
        let names: Vec<&str> = match ino.kind() {
            InoKind::Message { .. } => {
                let (_, meta) = self.message_of(ino)?;
                let extra: &[&str] = match meta.ids.as_deref().map(|i| &i.message) {
                    Some(ObjectId::Gmail(_)) => GMAIL_NAMES,
                    Some(ObjectId::Rfc8474(_)) => OBJECTID_NAMES,
                    None => &[],
                };
                MESSAGE_NAMES
                    .iter()
                    .chain(extra)
                    .copied()
                    .filter(|n| *n != "user.imap.modseq" || meta.modseq.is_some())
                    .collect()
            }
            InoKind::Draft(_) => vec!["user.imap.flags"],
            // Hook: fs::views.
            InoKind::View(v) => self.view_xattr_names(v)?,
            InoKind::Dir => {
                let mut v = Vec::new();
                if ino == ROOT {
                    v.push(STATS);
                }
                if self
                    .tree
                    .lock()
                    .dir(ino)
                    .is_some_and(|n| n.mailbox.is_some())
                {
                    v.extend_from_slice(FOLDER_NAMES);
                }
                v
            }
        };
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// setxattr (`value` given) or removexattr (`None`).
    pub(crate) fn set_xattr(&self, ino: Ino, name: &OsStr, value: Option<&[u8]>) -> Result<()> {
        // Hook: the views are read-only (fs::views).
        if ino.is_view() {
            return Err(Error::ReadOnly);
        }
        let name = name.to_str().unwrap_or("");
        let known = MESSAGE_NAMES.contains(&name)
            || GMAIL_NAMES.contains(&name)
            || OBJECTID_NAMES.contains(&name)
            || FOLDER_NAMES.contains(&name)
            || name == STATS;
        let writable = matches!(
            name,
            "user.imap.flags" | "user.imap.subscribed" | "user.gmail.labels"
        );
        if !writable {
            return Err(if known {
                Error::NotPermitted(format!("{name} is read-only"))
            } else {
                Error::Unsupported(format!("attribute {name}"))
            });
        }
        self.refuse_if_read_only()?;
        let text = match value {
            Some(v) => std::str::from_utf8(v)
                .map_err(|_| Error::InvalidInput(format!("{name}: not UTF-8")))?
                .trim_end_matches(['\n', '\0']),
            None => "",
        };
        match (ino.kind(), name) {
            (InoKind::Message { .. }, "user.imap.flags") => {
                let edit = FlagEdit::parse(text)?;
                let (msg, _) = self.message_of(ino)?;
                self.account.set_flags(msg, &edit)?;
                Ok(())
            }
            (InoKind::Message { .. }, "user.gmail.labels") => {
                // Parsed before anything is asked: a bad value is EINVAL with nothing sent.
                let edit = LabelEdit::parse(text)?;
                let (msg, meta) = self.message_of(ino)?;
                if !meta
                    .ids
                    .as_deref()
                    .is_some_and(|i| matches!(i.message, ObjectId::Gmail(_)))
                {
                    return Err(Error::Unsupported("labels on a server without them".into()));
                }
                self.account.set_labels(msg, &edit)?;
                Ok(())
            }
            (InoKind::Draft(_), "user.imap.flags") => {
                self.edit_draft_flags(ino, &FlagEdit::parse(text)?)
            }
            (InoKind::Dir, "user.imap.subscribed") => {
                let on = match (value.is_some(), text) {
                    (true, "1" | "yes" | "true") => true,
                    (false, _) | (true, "0" | "no" | "false") => false,
                    _ => {
                        return Err(Error::InvalidInput(
                            "user.imap.subscribed takes 1 or 0".into(),
                        ))
                    }
                };
                let (id, _) = self
                    .tree
                    .lock()
                    .dir(ino)
                    .and_then(|n| n.mailbox)
                    .ok_or_else(|| Error::NotPermitted("not a folder".into()))?;
                self.account.set_subscribed(id, on)?;
                let _ = self.account.mailboxes(Duration::ZERO);
                Ok(())
            }
            _ => Err(Error::Unsupported(format!("attribute {name} here"))),
        }
    }

    /// `key=value` lines about what the mount has done.
    fn stats(&self) -> String {
        let p = self.account.pool().stats();
        let (cache_bytes, hits, misses) = self.account.cache_stats();
        let (full, incremental, unchanged) = self.account.sync_counts();
        let (refetched, refetched_cached) = self.account.refetch_stats();
        let mut lines = vec![
            format!("connections_open={}", p.open),
            format!("connections_idle={}", p.idle),
            format!("connections_opened={}", p.connections_opened),
            format!("connect_failures={}", p.connect_failures),
            format!("round_trips={}", p.round_trips),
            format!("bytes_read={}", p.bytes_read),
            format!("bytes_today={}", self.account.bytes_today()),
            format!("cache_bytes={cache_bytes}"),
            format!("cache_hits={hits}"),
            format!("cache_misses={misses}"),
            format!("blocks_refetched={refetched}"),
            format!("blocks_refetched_cached={refetched_cached}"),
            format!("errors={}", p.errors),
            format!("searches={}", self.account.searches_run()),
            format!("part_trees={}", self.account.part_trees_built()),
            format!("listings_full={full}"),
            format!("listings_incremental={incremental}"),
            format!("listings_unchanged={unchanged}"),
            format!("watching={}", u8::from(self.account.is_live())),
            format!("streams={}", self.account.streams_started()),
            format!("streams_at_once={}", self.account.streams_at_once()),
            format!("streams_running={}", self.account.streams_running()),
            format!("throttle_waits={}", p.throttle_waits),
            format!("compress={}", if p.compressed { "on" } else { "off" }),
            format!("bytes_on_wire={}", p.bytes_on_wire),
            format!("bytes_saved={}", p.bytes_saved),
            format!("readdir_requests={}", self.listings_served.counts().0),
            format!("readdirplus_requests={}", self.listings_served.counts().1),
        ];
        lines.extend(self.account.disk_cache_lines());
        lines.extend(self.account.prefetch_lines());
        if let Some(cap) = p.connection_cap {
            lines.push(format!("connection_cap={cap}"));
        }
        if let Some(e) = p.last_error {
            lines.push(format!("last_error={}", e.replace('\n', " ")));
        }
        if let Some(d) = p.unreachable_for {
            lines.push(format!("unreachable_for_secs={}", d.as_secs()));
        }
        // The link (store/link.rs): online (and writable once resynced) or offline, since
        // when (seconds since the epoch).
        let link = self.account.link();
        let state = match (link.online, self.account.is_writable()) {
            (false, _) => "offline",
            (true, false) => "resyncing",
            (true, true) => "online",
        };
        lines.push(format!("link={state}"));
        let since = link.since.duration_since(std::time::UNIX_EPOCH);
        lines.push(format!(
            "link_since={}",
            since.unwrap_or_default().as_secs()
        ));
        lines.push(format!("resyncs={}", self.account.resyncs()));
        lines.join("\n")
    }
}

/// Flags as shown: space-separated, without `\Recent` (per-session state, gone in
/// IMAP4rev2, not a property of the mail).
fn flag_text(flags: &[Flag]) -> String {
    flags
        .iter()
        .filter(|f| **f != Flag::Recent)
        .map(Flag::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}
