#Requires -Version 7.4
<#
.SYNOPSIS
    Fuzzes the module's parsers with AFL++ and SharpFuzz for a bounded time, one target at a time.
.DESCRIPTION
    Builds fuzz/KvmStorage.Fuzz (Release) into out/fuzz/bin, instruments KvmStorage.Core.dll there with the
    SharpFuzz.CommandLine tool (.config/dotnet-tools.json), then runs afl-fuzz on each target for -Seconds,
    seeded from fuzz/corpus/<target>/. Findings (crashes, hangs) land in out/fuzz/findings/<target>/default/; the
    script prints executions, paths and findings per target and writes out/fuzz/summary.json. Installs afl++ from
    Debian when it is missing and the script runs as root. Reproduce a finding through an uninstrumented build (the
    instrumented one in out/fuzz/bin runs only under afl-fuzz; outside it every input crashes) with
      dotnet run --project fuzz/KvmStorage.Fuzz -- <target> <file>
    and commit it under fuzz/regressions/<target>/ so the xunit replay keeps it fixed.
.EXAMPLE
    dotnet tool restore; dotnet pwsh fuzz/Invoke-Fuzz.ps1 -Target qcow2 -Seconds 120
.EXAMPLE
    dotnet pwsh fuzz/Invoke-Fuzz.ps1 -Seconds 60     # every target, a minute each
#>
param(
    [string[]] $Target,
    [int] $Seconds = 120,
    # Milliseconds per execution before afl-fuzz calls it a hang.
    [int] $TimeoutMs = 5000
)
$ErrorActionPreference = 'Stop'
$PSNativeCommandUseErrorActionPreference = $true
$repo = Split-Path $PSScriptRoot -Parent
$out = Join-Path $repo 'out/fuzz'
$bin = Join-Path $out 'bin'
$targets = 'qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx', 'probe', 'qcow2-blocks', 'vmdk-blocks', 'vdi-blocks', 'vhd-blocks', 'vhdx-blocks', 'pool-xml', 'domain-xml'
if (-not $Target) { $Target = $targets }
$Target = @($Target | ForEach-Object { $_ -split ',' } | Where-Object { $_ })   # 'a,b' from a shell arrives as one string

if (-not (Get-Command afl-fuzz -ErrorAction SilentlyContinue)) {
    if ((& id -u) -ne '0' -or -not (Test-Path /etc/debian_version)) { throw 'afl-fuzz is missing: install afl++ (Debian: apt-get install afl++).' }
    $env:DEBIAN_FRONTEND = 'noninteractive'
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 afl++ | Out-Null
}

Push-Location $repo
try {
    dotnet tool restore | Out-Null
    if (Test-Path $bin) { Remove-Item -Recurse -Force $bin }
    dotnet build fuzz/KvmStorage.Fuzz/KvmStorage.Fuzz.csproj -c Release -nologo -v:q -o $bin
    # Instrument only the library under test: the harness and the runtime stay as they are.
    dotnet tool run sharpfuzz (Join-Path $bin 'KvmStorage.Core.dll')
}
finally { Pop-Location }

$env:AFL_SKIP_BIN_CHECK = '1'                       # dotnet itself is not instrumented; SharpFuzz reports coverage
$env:AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES = '1'    # containers cannot set core_pattern
$env:AFL_SKIP_CPUFREQ = '1'
$env:AFL_NO_UI = '1'
$env:AFL_NO_AFFINITY = '1'
$env:AFL_TRY_AFFINITY = '0'
$dotnet = (Get-Command dotnet).Source
$summary = foreach ($t in $Target) {
    if ($t -notin $targets) { throw "Unknown target '$t' (known: $($targets -join ', '))." }
    $findings = Join-Path $out "findings/$t"
    if (Test-Path $findings) { Remove-Item -Recurse -Force $findings }
    New-Item -ItemType Directory -Force (Split-Path $findings) | Out-Null
    Write-Host "==> afl-fuzz $t for $Seconds s" -ForegroundColor Cyan
    $PSNativeCommandUseErrorActionPreference = $false
    & afl-fuzz -i (Join-Path $PSScriptRoot "corpus/$t") -o $findings -V $Seconds -t $TimeoutMs -m none -- $dotnet (Join-Path $bin 'KvmStorage.Fuzz.dll') $t *> (Join-Path $out "afl-$t.log")
    $PSNativeCommandUseErrorActionPreference = $true
    $statsFile = Join-Path $findings 'default/fuzzer_stats'
    $stats = @{}
    if (Test-Path $statsFile) {
        foreach ($line in Get-Content $statsFile) { $k, $v = $line -split '\s*:\s*', 2; $stats[$k.Trim()] = "$v".Trim() }
    }
    else { Write-Warning "afl-fuzz left no stats for $t; see $(Join-Path $out "afl-$t.log")" }
    $crashes = @(Get-ChildItem (Join-Path $findings 'default/crashes') -File -Filter 'id*' -ErrorAction SilentlyContinue)
    $hangs = @(Get-ChildItem (Join-Path $findings 'default/hangs') -File -Filter 'id*' -ErrorAction SilentlyContinue)
    [pscustomobject]@{
        Target     = $t
        Seconds    = $Seconds
        Executions = [long]($stats['execs_done'] ?? 0)
        ExecPerSec = $stats['execs_per_sec']
        Corpus     = [int]($stats['corpus_count'] ?? 0)
        Crashes    = $crashes.Count
        Hangs      = $hangs.Count
        Findings   = @($crashes + $hangs | ForEach-Object FullName)
    }
}
$summary | Format-Table Target, Seconds, Executions, ExecPerSec, Corpus, Crashes, Hangs -AutoSize | Out-Host
$summary | ConvertTo-Json -Depth 3 | Set-Content (Join-Path $out 'summary.json')
