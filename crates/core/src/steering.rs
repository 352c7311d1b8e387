//! Health-steered accept: a classic BPF program attached to a SO_REUSEPORT
//! group that spreads new connections over the healthy slots only. The
//! program returns an index into the group (the order its sockets were
//! bound); the arbiter binds slot k's socket k-th, so index = slot.
//!
//! Two ways to pick among the healthy slots: by the CPU that took the
//! connection's SYN (`Spread::ByCpu`: a client thread's connections all go
//! to one worker, so on a busy box the two take turns on one core instead
//! of each worker serving every client thread and waiting behind the
//! others' time slices), or uniformly at random (`Spread::Random`).

use std::io;
use std::os::fd::RawFd;

use crate::sys::cvt;

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const BPF_ALU_MOD_K: u16 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_RET_A: u16 = 0x06 | 0x10; // BPF_RET | BPF_A
/// `SKF_AD_OFF + SKF_AD_RANDOM`: a fresh random number per packet (per SYN).
const LOAD_RANDOM: u32 = (-0x1000i32 + 56) as u32;
/// `SKF_AD_OFF + SKF_AD_CPU`: the CPU processing the packet (the SYN).
const LOAD_CPU: u32 = (-0x1000i32 + 36) as u32;

/// What the program picks a healthy slot by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// The CPU that took the SYN, modulo the healthy count.
    ByCpu,
    /// A random number per SYN, modulo the healthy count.
    Random,
}

impl Spread {
    fn load(self) -> u32 {
        match self {
            Spread::ByCpu => LOAD_CPU,
            Spread::Random => LOAD_RANDOM,
        }
    }
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program choosing among `slots` (group indices) by `spread`. An empty
/// list means "no healthy slot": spread over all `group_size` sockets.
pub fn program(slots: &[u32], group_size: u32, spread: Spread) -> Vec<libc::sock_filter> {
    let identity: Vec<u32> = (0..group_size.max(1)).collect();
    let slots = if slots.is_empty() {
        &identity[..]
    } else {
        slots
    };
    let n = slots.len() as u32;
    let mut prog = vec![
        op(BPF_LD_W_ABS, 0, 0, spread.load()),
        op(BPF_ALU_MOD_K, 0, 0, n),
    ];
    if slots.iter().copied().eq(0..n) {
        prog.push(op(BPF_RET_A, 0, 0, 0));
        return prog;
    }
    let (last, rest) = slots.split_last().unwrap_or((&0, &[]));
    for (i, &slot) in rest.iter().enumerate() {
        prog.push(op(BPF_JEQ_K, 0, 1, i as u32));
        prog.push(op(BPF_RET_K, 0, 0, slot));
    }
    prog.push(op(BPF_RET_K, 0, 0, *last));
    prog
}

/// Attaches `program(slots, group_size, spread)` to the group `fd` belongs to.
pub fn steer(fd: RawFd, slots: &[u32], group_size: u32, spread: Spread) -> io::Result<()> {
    let mut prog = program(slots, group_size, spread);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at a valid filter array for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    cvt(rc).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::bind_group;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// Runs the program's arithmetic for a given loaded number.
    fn eval(prog: &[libc::sock_filter], loaded: u32) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let ins = &prog[pc];
            match ins.code {
                BPF_LD_W_ABS => a = loaded,
                BPF_ALU_MOD_K => a %= ins.k,
                BPF_JEQ_K => {
                    pc += if a == ins.k {
                        ins.jt as usize
                    } else {
                        ins.jf as usize
                    };
                }
                BPF_RET_K => return ins.k,
                BPF_RET_A => return a,
                other => panic!("unexpected opcode {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn picks_only_listed_slots_evenly() {
        let prog = program(&[1, 3], 4, Spread::Random);
        assert_eq!(prog[0].k, LOAD_RANDOM);
        let mut seen = [0; 4];
        for r in 0..1000 {
            seen[eval(&prog, r) as usize] += 1;
        }
        assert_eq!(seen, [0, 500, 0, 500]);
    }

    #[test]
    fn empty_list_spreads_over_the_whole_group() {
        let prog = program(&[], 3, Spread::Random);
        let picks: Vec<u32> = (0..6).map(|r| eval(&prog, r)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn steered_group_sends_every_connection_to_the_healthy_slot() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 2, 64).unwrap();
        steer(fds[0].as_raw_fd(), &[1], 2, Spread::Random).unwrap();
        let listeners: Vec<TcpListener> = fds.into_iter().map(TcpListener::from).collect();
        let clients: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"x").unwrap();
                c
            })
            .collect();
        let accepted = |l: &TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
        assert_eq!(accepted(&listeners[0]), 0);
        assert_eq!(accepted(&listeners[1]), clients.len());
    }

    /// Pins the calling thread to one CPU (tests connect from a known CPU).
    fn run_on_cpu(cpu: usize) -> bool {
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    #[test]
    fn by_cpu_sends_a_client_cpu_connections_to_one_slot() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 2, 64).unwrap();
        steer(fds[0].as_raw_fd(), &[0, 1], 2, Spread::ByCpu).unwrap();
        let listeners: Vec<TcpListener> = fds.into_iter().map(TcpListener::from).collect();
        for l in &listeners {
            l.set_nonblocking(true).unwrap();
        }
        // Loopback SYNs are processed on the sending CPU: CPU c -> slot c % 2.
        for cpu in 0..cpus.min(2) {
            let clients = std::thread::spawn(move || {
                assert!(run_on_cpu(cpu), "cannot run on CPU {cpu}");
                (0..10)
                    .map(|_| TcpStream::connect(addr).unwrap())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            let accepted = |l: &TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
            let counts = [accepted(&listeners[0]), accepted(&listeners[1])];
            let mut expected = [0, 0];
            expected[cpu % 2] = clients.len();
            assert_eq!(counts, expected, "connections from CPU {cpu}");
        }
    }

    #[test]
    fn by_cpu_loads_the_cpu_number() {
        let prog = program(&[0, 2], 3, Spread::ByCpu);
        assert_eq!(prog[0].k, LOAD_CPU);
        let picks: Vec<u32> = (0..4).map(|cpu| eval(&prog, cpu)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }
}
