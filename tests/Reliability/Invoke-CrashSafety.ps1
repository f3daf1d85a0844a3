#Requires -Version 7.4
<#
.SYNOPSIS
    The long form of the crash-safety harness: N SIGKILL trials per operation class, with a summary.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Package
    dotnet pwsh tests/Reliability/Invoke-CrashSafety.ps1 -Trials 200
.EXAMPLE
    dotnet pwsh tests/Reliability/Invoke-CrashSafety.ps1 -Trials 20 -Operation ResizeVolumeQcow2L1 -Seed 7
#>
param(
    [int] $Trials = 200,
    [int] $Seed = 20261125,
    [string[]] $Operation,
    [string] $Module = (Get-ChildItem (Join-Path $PSScriptRoot '../../out/KvmStorage/*/KvmStorage.psd1') | Select-Object -First 1).FullName
)
$ErrorActionPreference = 'Stop'
Import-Module $Module -Force
Import-Module (Join-Path $PSScriptRoot 'CrashHarness.psm1') -Force
$work = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-crash-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
New-Item -ItemType Directory -Path $work | Out-Null
try {
    $results = Invoke-CrashTrial -Module $Module -WorkFolder $work -Trials $Trials -Seed $Seed -Operation $Operation
    $results | Group-Object Operation | ForEach-Object {
        $killed = @($_.Group | Where-Object { $_.Trial -gt 0 -and -not $_.Completed }).Count
        [pscustomobject]@{
            Operation  = $_.Name
            Trials     = @($_.Group | Where-Object Trial -GT 0).Count
            KilledMidway = $killed
            DurationMs = ($_.Group | Select-Object -First 1).DurationMs
            Failures   = @($_.Group | Where-Object { $_.Problems.Count -gt 0 }).Count
        }
    } | Format-Table -AutoSize | Out-Host
    $bad = @($results | Where-Object { $_.Problems.Count -gt 0 })
    foreach ($r in $bad) { Write-Host "$($r.Operation) trial $($r.Trial) (kill at $($r.DelayMs) ms): $($r.Problems -join ' | ')" -ForegroundColor Red }
    if ($bad) { exit 1 }
}
finally { Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue }
