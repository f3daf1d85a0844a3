#Requires -Version 7.4
<#
.SYNOPSIS
    The long form of the crash-safety harness: N SIGKILL trials per operation class, with a summary.
.DESCRIPTION
    Every trial's result is appended to <ResultFolder>/<class>.jsonl as it finishes; -SummaryOnly summarises a
    folder (of a run still going, or stopped) without running anything.
    Each class runs its trials in order in one process (Invoke-CrashTrial); -Parallel runs that many classes at
    once, each in its own pwsh (the harness sets KVMSTORAGE_ROOT, which is per process). The summary gives per
    class the trials, how many kills landed before the command had finished (KilledMidway), the measured
    duration of an uninterrupted run, the spread of the kill moments, and the trials with problems.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Package
    dotnet pwsh tests/Reliability/Invoke-CrashSafety.ps1 -Trials 200 -Parallel 3 -OutFile /work/crash-long.txt
.EXAMPLE
    dotnet pwsh tests/Reliability/Invoke-CrashSafety.ps1 -Trials 20 -Operation ResizeVolumeQcow2L1 -Seed 7
#>
param(
    [int] $Trials = 200,
    [int] $Seed = 20261125,
    [string[]] $Operation,
    [int] $Parallel = 1,
    # Also write the summary (and every failing trial) to this file.
    [string] $OutFile,
    # Keep every trial's result as a JSON line in this folder (one file per class, written as the trials run),
    # so a long run can be watched and summarised even if it is stopped: see -SummaryOnly.
    [string] $ResultFolder,
    # Only summarise the results already in -ResultFolder.
    [switch] $SummaryOnly,
    # Internal: the class runner of -Parallel (results to -ResultFolder, no summary).
    [switch] $Worker,
    [string] $Module = (Get-ChildItem (Join-Path $PSScriptRoot '../../out/KvmStorage/*/KvmStorage.psd1') | Select-Object -First 1).FullName
)
$ErrorActionPreference = 'Stop'
$Module = (Resolve-Path -LiteralPath $Module).Path
$table = & (Join-Path $PSScriptRoot 'CrashOperations.ps1')
$names = @($table.Name)
if ($Operation) {
    $Operation = @($Operation | ForEach-Object { $_ -split ',' } | Where-Object { $_ })
    foreach ($o in $Operation) { if ($o -notin $names) { throw "Unknown operation class '$o' (known: $($names -join ', '))." } }
    $names = @($names | Where-Object { $_ -in $Operation })
}
$sw = [Diagnostics.Stopwatch]::StartNew()
$started = Get-Date
if (-not $ResultFolder) { $ResultFolder = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-crash-results-" + [guid]::NewGuid().ToString('N').Substring(0, 8)) }
New-Item -ItemType Directory -Force -Path $ResultFolder | Out-Null
$ResultFolder = (Resolve-Path -LiteralPath $ResultFolder).Path

if ($SummaryOnly) { }
elseif ($Parallel -gt 1 -and $names.Count -gt 1) {
    $exe = [Environment]::ProcessPath
    $first = [Environment]::GetCommandLineArgs()[0]
    $prefix = if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { @($first) } else { @() }
    $self = $PSCommandPath
    $names | ForEach-Object -ThrottleLimit $Parallel -Parallel {
        $log = Join-Path $using:ResultFolder "$_.log"
        $pre = @($using:prefix)
        & $using:exe @pre -NoProfile -NonInteractive -File $using:self -Worker -Operation $_ -Trials $using:Trials -Seed $using:Seed -Module $using:Module -ResultFolder $using:ResultFolder *> $log
        Write-Host "$(Get-Date -Format HH:mm:ss) $_ finished (exit $LASTEXITCODE)"
    }
}
else {
    Import-Module $Module -Force
    Import-Module (Join-Path $PSScriptRoot 'CrashHarness.psm1') -Force
    $work = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-crash-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $work | Out-Null
    try {
        Invoke-CrashTrial -Module $Module -WorkFolder $work -Trials $Trials -Seed $Seed -Operation $names | ForEach-Object {
            Add-Content -LiteralPath (Join-Path $ResultFolder "$($_.Operation).jsonl") -Value ($_ | ConvertTo-Json -Depth 4 -Compress)
        }
    }
    finally { Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue }
    if ($Worker) { exit 0 }
}

$results = @(foreach ($n in $names) {
    $file = Join-Path $ResultFolder "$n.jsonl"
    if (Test-Path -LiteralPath $file) { Get-Content -LiteralPath $file | ForEach-Object { $_ | ConvertFrom-Json } }
    elseif (-not $SummaryOnly) { [pscustomobject]@{ Operation = $n; Trial = -1; DelayMs = -1; DurationMs = 0; Completed = $false; Problems = @("the class runner left no results: $(Get-Content -Raw -ErrorAction SilentlyContinue (Join-Path $ResultFolder "$n.log"))") } }
})
$summary = $results | Group-Object Operation | ForEach-Object {
    $runs = @($_.Group | Where-Object Trial -GT 0)
    $delays = @($runs | ForEach-Object DelayMs | Sort-Object)
    [pscustomobject]@{
        Operation    = $_.Name
        Trials       = $runs.Count
        KilledMidway = @($runs | Where-Object { -not $_.Completed }).Count
        # Kills timed before the end of the calibrated run (the rest of [0, 1.1 x duration) tests the finished state).
        KillBeforeEnd = @($runs | Where-Object { $_.DelayMs -lt $_.DurationMs }).Count
        DurationMs   = ($_.Group | Where-Object Trial -EQ 0 | Select-Object -First 1).DurationMs
        KillAtMs     = if ($delays) { "$($delays[0])..$($delays[-1])" } else { '' }
        Failures     = @($_.Group | Where-Object { $_.Problems.Count -gt 0 }).Count
    }
}
$bad = @($results | Where-Object { $_.Problems.Count -gt 0 })
$text = @(
    "Crash-safety long mode: $($names.Count) classes, $Trials trials each, seed $Seed, parallel $Parallel"
    "Machine: $(hostname), $([Environment]::ProcessorCount) cores, $((Get-Content /proc/loadavg -ErrorAction SilentlyContinue) -split ' ' | Select-Object -First 3) load at the end; $(uname -sr)"
    if ($SummaryOnly) { "Results in $ResultFolder" } else { "Started $($started.ToString('yyyy-MM-dd HH:mm:ss')), took $([int][Math]::Floor($sw.Elapsed.TotalMinutes)) min $($sw.Elapsed.Seconds) s; results in $ResultFolder" }
    ($summary | Format-Table -AutoSize | Out-String -Width 200).TrimEnd()
    ''
    "Total: $(($summary | Measure-Object Trials -Sum).Sum) trials, $(($summary | Measure-Object KilledMidway -Sum).Sum) killed midway, $($bad.Count) with problems"
    foreach ($r in $bad) { "$($r.Operation) trial $($r.Trial) (kill at $($r.DelayMs) of ~$($r.DurationMs) ms): $($r.Problems -join ' | ')" }
)
$text | Out-Host
if ($OutFile) { $text | Set-Content -LiteralPath $OutFile }
if ($bad) { exit 1 }
