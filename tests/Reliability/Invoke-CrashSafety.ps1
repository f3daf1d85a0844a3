#Requires -Version 7.4
<#
.SYNOPSIS
    The long form of the crash-safety harness: N SIGKILL trials per operation class, with a summary.
.DESCRIPTION
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
    # Internal: write the raw results as JSON here instead of a summary (used by -Parallel).
    [string] $ResultPath,
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

if ($Parallel -gt 1 -and $names.Count -gt 1) {
    $exe = [Environment]::ProcessPath
    $first = [Environment]::GetCommandLineArgs()[0]
    $prefix = if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { @($first) } else { @() }
    $scratch = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-crash-results-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $scratch | Out-Null
    $self = $PSCommandPath
    $names | ForEach-Object -ThrottleLimit $Parallel -Parallel {
        $json = Join-Path $using:scratch "$_.json"
        $log = Join-Path $using:scratch "$_.log"
        $pre = @($using:prefix)
        & $using:exe @pre -NoProfile -NonInteractive -File $using:self -Operation $_ -Trials $using:Trials -Seed $using:Seed -Module $using:Module -ResultPath $json *> $log
        Write-Host "$(Get-Date -Format HH:mm:ss) $_ finished (exit $LASTEXITCODE)"
    }
    $results = foreach ($n in $names) {
        $json = Join-Path $scratch "$n.json"
        if (Test-Path $json) { Get-Content -Raw $json | ConvertFrom-Json }
        else { [pscustomobject]@{ Operation = $n; Trial = -1; DelayMs = -1; DurationMs = 0; Completed = $false; Problems = @("the class runner failed: $(Get-Content -Raw (Join-Path $scratch "$n.log"))") } }
    }
    Remove-Item -Recurse -Force $scratch
}
else {
    Import-Module $Module -Force
    Import-Module (Join-Path $PSScriptRoot 'CrashHarness.psm1') -Force
    $work = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-crash-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $work | Out-Null
    try { $results = @(Invoke-CrashTrial -Module $Module -WorkFolder $work -Trials $Trials -Seed $Seed -Operation $names) }
    finally { Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue }
    if ($ResultPath) {
        ConvertTo-Json -InputObject @($results) -Depth 4 | Set-Content -LiteralPath $ResultPath
        exit 0
    }
}

$summary = $results | Group-Object Operation | ForEach-Object {
    $runs = @($_.Group | Where-Object Trial -GT 0)
    $delays = @($runs | ForEach-Object DelayMs | Sort-Object)
    [pscustomobject]@{
        Operation    = $_.Name
        Trials       = $runs.Count
        KilledMidway = @($runs | Where-Object { -not $_.Completed }).Count
        DurationMs   = ($_.Group | Where-Object Trial -EQ 0 | Select-Object -First 1).DurationMs
        KillAtMs     = if ($delays) { "$($delays[0])..$($delays[-1])" } else { '' }
        Failures     = @($_.Group | Where-Object { $_.Problems.Count -gt 0 }).Count
    }
}
$bad = @($results | Where-Object { $_.Problems.Count -gt 0 })
$text = @(
    "Crash-safety long mode: $($names.Count) classes, $Trials trials each, seed $Seed, parallel $Parallel"
    "Machine: $(hostname), $([Environment]::ProcessorCount) cores, $((Get-Content /proc/loadavg -ErrorAction SilentlyContinue) -split ' ' | Select-Object -First 3) load at the end; $(uname -sr)"
    "Started $($started.ToString('yyyy-MM-dd HH:mm:ss')), took $([int]$sw.Elapsed.TotalMinutes) min $($sw.Elapsed.Seconds) s"
    ($summary | Format-Table -AutoSize | Out-String -Width 200).TrimEnd()
    ''
    "Total: $(($summary | Measure-Object Trials -Sum).Sum) trials, $(($summary | Measure-Object KilledMidway -Sum).Sum) killed midway, $($bad.Count) with problems"
    foreach ($r in $bad) { "$($r.Operation) trial $($r.Trial) (kill at $($r.DelayMs) of ~$($r.DurationMs) ms): $($r.Problems -join ' | ')" }
)
$text | Out-Host
if ($OutFile) { $text | Set-Content -LiteralPath $OutFile }
if ($bad) { exit 1 }
