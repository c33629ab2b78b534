//! The `exec` stage through the real binary: `pipelines/exec.yaml`, and
//! Python scripts that crash, answer garbage, hang or log, checked for their
//! items, their stats, their log lines and the processes they leave behind
//! (none).
//!
//! Every script writes `started pid N` to stderr when it starts, which the
//! log shows, so a test knows every process its run started.

use std::path::Path;

use flow_tests::{flow, pipeline, read_jsonl, run, stage, stats, write_pipeline};

/// The first lines of every test script: report the pid, then answer.
const PREAMBLE: &str = "import json, os, sys
print(f'started pid {os.getpid()}', file=sys.stderr, flush=True)
";

/// A run of a pipeline written into a temp dir next to its scripts.
struct ExecRun {
    dir: tempfile::TempDir,
    stats: serde_json::Value,
    log: String,
}

impl ExecRun {
    /// Writes `scripts` (name, body after [`PREAMBLE`]) and the pipeline
    /// `yaml` into a temp dir, runs it and expects exit code `code`.
    fn new(yaml: &str, scripts: &[(&str, &str)], code: i32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in scripts {
            std::fs::write(dir.path().join(name), format!("{PREAMBLE}{body}")).unwrap();
        }
        let file = write_pipeline(dir.path(), "p.yaml", yaml);
        let stats_file = dir.path().join("stats.json");
        let out = run(flow()
            .arg("run")
            .arg(&file)
            .arg("--stats-json")
            .arg(&stats_file))
        .expect_code(code);
        ExecRun {
            stats: stats(&stats_file),
            log: out.stderr,
            dir,
        }
    }

    fn jsonl(&self, name: &str) -> Vec<serde_json::Value> {
        read_jsonl(&self.dir.path().join(name))
    }
}

/// The pids of the processes a run started, in order, from their
/// `started pid N` log lines.
fn started_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter_map(|l| l.split("started pid ").nth(1))
        .map(|pid| pid.trim().parse().unwrap())
        .collect()
}

/// `(item, pid)` of each answer, as the test scripts shape them.
fn answers(rows: &[serde_json::Value]) -> Vec<(i64, u32)> {
    rows.iter()
        .map(|r| {
            let pid = r["pid"].as_u64().unwrap() as u32;
            (r["item"].as_i64().unwrap(), pid)
        })
        .collect()
}

/// Panics unless every process in `pids` is gone, zombies included: flow
/// reaps what it starts.
fn assert_gone(pids: &[u32]) {
    assert!(!pids.is_empty(), "the run started no process");
    for pid in pids {
        let proc = Path::new("/proc").join(pid.to_string());
        if let Ok(status) = std::fs::read_to_string(proc.join("status")) {
            panic!("process {pid} outlived the run:\n{status}");
        }
    }
}

#[test]
fn exec_yaml_scores_the_mood_of_each_review_and_filters_out_blank_ones() {
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let out = run(flow()
        .arg("run")
        .arg(pipeline("exec.yaml"))
        .arg("--stats-json")
        .arg(&stats_file)
        .env("OUT", dir.path()))
    .expect_code(0);
    let rows = read_jsonl(&dir.path().join("exec.jsonl"));
    let got: Vec<(i64, &str, i64, i64)> = rows
        .iter()
        .map(|r| {
            let mood = r["mood"].as_str().unwrap();
            let (id, score) = (r["id"].as_i64().unwrap(), r["score"].as_i64().unwrap());
            (id, mood, score, r["words"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "positive", 3, 6),
            (2, "negative", -2, 7),
            (3, "neutral", 0, 6),
            (5, "neutral", 0, 7),
            (6, "negative", -3, 4),
        ]
    );
    assert_eq!(rows[0]["text"], "Great food, friendly staff. Love it!");
    let stats = stats(&stats_file);
    let mood = stage(&stats, "mood");
    assert_eq!(mood["items_in"], 6);
    assert_eq!(mood["items_out"], 5);
    assert_eq!(mood["errors"], 0);
    // The script's stderr, in the log under the stage's name.
    assert!(
        out.stderr.contains("]: review 4 is blank: skipped"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("mood["), "{}", out.stderr);
}

#[test]
fn each_worker_keeps_a_process_of_its_own() {
    // No process answers until three have each taken an item: the three
    // workers must be talking to three processes at once.
    let barrier = "import time
me, first = os.getpid(), True
for line in sys.stdin:
    if first:
        open(f'ready-{me}', 'w').close()
        deadline = time.time() + 30
        while sum(f.startswith('ready-') for f in os.listdir('.')) < 3:
            if time.time() > deadline:
                sys.exit('the other workers never came')
            time.sleep(0.005)
        first = False
    print(json.dumps({'item': json.loads(line), 'pid': me}), flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 30}}
  - {name: work, type: exec, workers: 3, with: {command: [python3, barrier.py]}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        &[("barrier.py", barrier)],
        0,
    );
    let mut started = started_pids(&r.log);
    started.sort();
    assert_eq!(started.len(), 3, "one process per worker:\n{}", r.log);
    let rows = answers(&r.jsonl("out.jsonl"));
    let mut items: Vec<i64> = rows.iter().map(|&(item, _)| item).collect();
    items.sort();
    assert_eq!(items, (0..30).collect::<Vec<_>>());
    let mut answered: Vec<u32> = rows.iter().map(|&(_, pid)| pid).collect();
    answered.sort();
    answered.dedup();
    assert_eq!(answered, started);
    assert_gone(&started);
}

#[test]
fn a_crash_fails_the_item_and_a_restarted_process_answers_its_retry_and_the_rest() {
    let crash = "for line in sys.stdin:
    item = json.loads(line)
    if item == 3 and not os.path.exists('crashed'):
        open('crashed', 'w').close()
        raise RuntimeError('item 3 is cursed')
    print(json.dumps({'item': item, 'pid': os.getpid()}), flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 6}}
  - name: work
    type: exec
    retry: {attempts: 2, backoff: 10ms}
    with: {command: [python3, crash.py]}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        &[("crash.py", crash)],
        0,
    );
    let work = stage(&r.stats, "work");
    assert_eq!(work["retries"], 1);
    assert_eq!(work["errors"], 0);
    assert_eq!(work["items_out"], 6);
    let started = started_pids(&r.log);
    let [first, second] = started[..] else {
        panic!("expected two processes:\n{}", r.log)
    };
    let expected: Vec<(i64, u32)> = (0..6)
        .map(|i| (i, if i < 3 { first } else { second }))
        .collect();
    assert_eq!(answers(&r.jsonl("out.jsonl")), expected);
    // The crash's traceback is in the log, under the crashed process.
    let traceback = format!("work[{first}]: RuntimeError: item 3 is cursed");
    assert!(r.log.contains(&traceback), "{}", r.log);
    assert_gone(&started);
}

#[test]
fn invalid_output_fails_the_item_and_later_items_still_work() {
    let garbage = "for line in sys.stdin:
    item = json.loads(line)
    if item == 3:
        print('oops: not json', flush=True)
    else:
        print(json.dumps({'item': item, 'pid': os.getpid()}), flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 6}}
  - name: work
    type: exec
    retry: {attempts: 2, backoff: 10ms}
    on_error: dead
    with: {command: [python3, garbage.py]}
  - {name: out, type: write, with: {path: out.jsonl}}
  - {name: dead, type: write, inputs: [], with: {path: dead.jsonl}}
",
        &[("garbage.py", garbage)],
        3,
    );
    let work = stage(&r.stats, "work");
    assert_eq!(work["retries"], 1);
    assert_eq!(work["errors"], 1);
    assert_eq!(work["dead_lettered"], 1);
    let letters = r.jsonl("dead.jsonl");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["item"], 3);
    assert_eq!(letters[0]["error"]["attempts"], 2);
    let message = letters[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("invalid JSON"), "{message}");
    assert!(message.contains("oops: not json"), "{message}");
    // Each bad answer cost its process: a third one answers 4 and 5.
    let started = started_pids(&r.log);
    assert_eq!(started.len(), 3, "{}", r.log);
    let expected = [
        (0, started[0]),
        (1, started[0]),
        (2, started[0]),
        (4, started[2]),
        (5, started[2]),
    ];
    assert_eq!(answers(&r.jsonl("out.jsonl")), expected);
    assert_gone(&started);
}

#[test]
fn a_hung_item_times_out_and_its_late_answer_never_reaches_another_item() {
    // The first time it sees item 3, the script hangs until the next line
    // arrives and only then answers 3 (marked late). A worker that kept the
    // process would hand it the retry of 3 and read that late answer back.
    let hang = "for line in sys.stdin:
    item = json.loads(line)
    if item == 3 and not os.path.exists('hung'):
        open('hung', 'w').close()
        sys.stdin.readline()
        print(json.dumps({'item': item, 'pid': os.getpid(), 'late': True}), flush=True)
    print(json.dumps({'item': item, 'pid': os.getpid()}), flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 6}}
  - name: work
    type: exec
    timeout: 2s
    retry: {attempts: 3, backoff: 10ms}
    with: {command: [python3, hang.py]}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        &[("hang.py", hang)],
        0,
    );
    let work = stage(&r.stats, "work");
    assert_eq!(work["retries"], 1);
    assert_eq!(work["errors"], 0);
    let rows = r.jsonl("out.jsonl");
    assert!(rows.iter().all(|r| r.get("late").is_none()), "{rows:?}");
    let started = started_pids(&r.log);
    let [first, second] = started[..] else {
        panic!("expected two processes:\n{}", r.log)
    };
    let expected: Vec<(i64, u32)> = (0..6)
        .map(|i| (i, if i < 3 { first } else { second }))
        .collect();
    assert_eq!(answers(&rows), expected);
    assert_gone(&started);
}

#[test]
fn stderr_lines_reach_the_log_prefixed_with_the_stage_and_pid() {
    let chatty = "for line in sys.stdin:
    item = json.loads(line)
    print(f'looking at item {item}', file=sys.stderr, flush=True)
    print(json.dumps(None), flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 5}}
  - {name: chat, type: exec, with: {command: [python3, chatty.py]}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        &[("chatty.py", chatty)],
        0,
    );
    let started = started_pids(&r.log);
    assert_eq!(started.len(), 1);
    for i in 0..5 {
        let line = format!("chat[{}]: looking at item {i}", started[0]);
        assert!(r.log.contains(&line), "no {line:?} in\n{}", r.log);
    }
    // Every answer was `null`: five items in, none out.
    let chat = stage(&r.stats, "chat");
    assert_eq!(
        (chat["items_in"].as_u64(), chat["items_out"].as_u64()),
        (Some(5), Some(0))
    );
    assert!(r.jsonl("out.jsonl").is_empty());
    assert_gone(&started);
}

#[test]
fn no_process_outlives_a_run_that_fails() {
    let crash = "for line in sys.stdin:
    if json.loads(line) == 2:
        sys.exit(7)
    print(line, end='', flush=True)
";
    let r = ExecRun::new(
        "stages:
  - {name: jobs, type: generate, with: {count: 100}}
  - {name: work, type: exec, workers: 2, on_error: fail, with: {command: [python3, crash.py]}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
        &[("crash.py", crash)],
        1,
    );
    assert!(r.log.contains("exit status: 7"), "{}", r.log);
    assert_gone(&started_pids(&r.log));
}

#[test]
fn a_program_that_cannot_be_found_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: jobs, type: generate, with: {count: 1}}
  - {name: work, type: exec, with: {command: [pyhton3, enrich.py]}}
  - {name: out, type: drop}
",
    );
    let out = run(flow().arg("validate").arg(&file)).expect_code(2);
    assert!(out.stderr.contains("command"), "{}", out.stderr);
    assert!(
        out.stderr.contains("\"pyhton3\" not found on PATH"),
        "{}",
        out.stderr
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_in_a_terminal_reaches_flow_which_drains_through_the_processes() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let echo = "for line in sys.stdin:
    item = json.loads(line)
    print(json.dumps({'item': item, 'pid': os.getpid()}), flush=True)
";
    std::fs::write(dir.path().join("echo.py"), format!("{PREAMBLE}{echo}")).unwrap();
    let file = write_pipeline(
        dir.path(),
        "p.yaml",
        "stages:
  - {name: jobs, type: generate, with: {count: 100000000}}
  - {name: work, type: exec, workers: 2, with: {command: [python3, echo.py]}}
  - {name: out, type: write, with: {path: out.jsonl}}
",
    );
    let stats_file = dir.path().join("stats.json");
    // flow leads a process group of its own, as a shell's foreground job
    // does; Ctrl-C in the terminal signals that whole group.
    let mut child = flow()
        .arg("run")
        .arg(&file)
        .arg("--stats-json")
        .arg(&stats_file)
        .process_group(0)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // Both processes have started once both have said so.
    while started_pids(&log).len() < 2 {
        assert!(stderr.read_line(&mut log).unwrap() > 0, "{log}");
    }
    let group = format!("-{}", child.id());
    let kill = std::process::Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log += &rest;
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "{log}");
    let stats = stats(&stats_file);
    let work = stage(&stats, "work");
    assert_eq!(work["errors"], 0, "{log}");
    assert_eq!(work["items_in"], work["items_out"]);
    assert_eq!(stage(&stats, "out")["items_in"], work["items_out"]);
    assert_gone(&started_pids(&log));
}
