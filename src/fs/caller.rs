//! Who sent a FUSE request, read from `/proc/TID/status` (never `/proc/TID/stat`: reading
//! `stat` of a process in execve waits for its exec lock, which it holds while its
//! close-on-exec flushes one of our files and waits for our reply; both then hang in D state).
//! Drafts use it to tell a killed writer's close from a program's.

/// What /proc/TID/status tells of the thread that sent a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    /// Its process (thread group).
    pub tgid: Option<u32>,
    /// A fatal signal is pending: the process dies before it could see any result, and a
    /// close now is the kernel's, not the program's.
    pub killed: bool,
}

impl Caller {
    pub(crate) fn of(tid: u32) -> Option<Caller> {
        let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
        Some(Caller::parse(&status))
    }

    fn parse(status: &str) -> Caller {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let mask = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
        let pending = mask("SigPnd").unwrap_or(0) | mask("ShdPnd").unwrap_or(0);
        let blocked = mask("SigBlk").unwrap_or(u64::MAX);
        let handled = mask("SigCgt").unwrap_or(u64::MAX) | mask("SigIgn").unwrap_or(u64::MAX);
        let bit = |sig: u32| 1u64 << (sig - 1);
        // A pending SIGKILL, or a signal whose default action (taken: not blocked, not
        // caught, not ignored) ends the process. Stop, continue and harmless signals aside.
        let harmless = [17, 18, 19, 20, 21, 22, 23, 28]
            .iter()
            .fold(0, |m, &s| m | bit(s));
        let fatal = pending & !blocked & !handled & !harmless;
        Caller {
            tgid: field("Tgid").and_then(|v| v.parse().ok()),
            killed: pending & bit(9) != 0 || fatal != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Caller;

    fn status(shd: &str, pnd: &str, blk: &str, ign: &str, cgt: &str) -> String {
        format!(
            "Name:\tcp\nState:\tR (running)\nTgid:\t4242\nPid:\t4243\nSigQ:\t1/1000\n\
             SigPnd:\t{pnd}\nShdPnd:\t{shd}\nSigBlk:\t{blk}\nSigIgn:\t{ign}\nSigCgt:\t{cgt}\n"
        )
    }

    const NONE: &str = "0000000000000000";

    #[test]
    fn a_pending_sigkill_is_a_kill() {
        let c = Caller::parse(&status("0000000000000100", NONE, NONE, NONE, NONE));
        assert!(c.killed);
        assert_eq!(c.tgid, Some(4242));
    }

    #[test]
    fn a_pending_sigint_with_its_default_action_is_a_kill() {
        let c = Caller::parse(&status("0000000000000002", NONE, NONE, NONE, NONE));
        assert!(c.killed);
    }

    #[test]
    fn a_blocked_or_caught_signal_or_sigchld_is_no_kill() {
        let int = "0000000000000002";
        assert!(!Caller::parse(&status(int, NONE, int, NONE, NONE)).killed);
        assert!(!Caller::parse(&status(int, NONE, NONE, NONE, int)).killed);
        let chld = "0000000000010000";
        assert!(!Caller::parse(&status(chld, NONE, NONE, NONE, NONE)).killed);
        assert!(!Caller::parse(&status(NONE, NONE, NONE, NONE, NONE)).killed);
    }

    #[test]
    fn unreadable_masks_mean_no_kill() {
        let c = Caller::parse("Tgid:\t7\nShdPnd:\t0000000000000002\n");
        assert!(!c.killed);
        assert_eq!(c.tgid, Some(7));
    }
}
