#Requires -Version 7.4
<#
.SYNOPSIS
    Runs the Pester suites of the cmdlets against the built module, in this (fresh) process.
.DESCRIPTION
    Called by build.ps1 -Task Test with these environment variables:
      KVMSTORAGE_TEST_MODULE   the built KvmStorage.psd1 that the tests import
      KVMSTORAGE_PESTER        Pester.psd1 restored from NuGet
      KVMSTORAGE_PESTER_RESULT where to write {Passed, Failed, Skipped} as JSON
      KVMSTORAGE_PESTER_EXCLUDE comma-separated tags to leave out
    The pool, volume and VM disk suites run twice, with -Data @{ Backend = 'Offline' } and @{ Backend = 'Live' }.
    For the live runs one private libvirtd (tests/Pester/LibvirtDaemon.psm1) is started here, shared by the
    suites through KVMSTORAGE_TEST_LIBVIRT_URI, and stopped by its PID at the end; where it cannot run (not root,
    packages missing, the Daemon tag excluded) the live runs are skipped with the reason.
#>
param(
    # Only these test files (names or paths); all of tests/Pester by default.
    [string[]] $Path
)
$ErrorActionPreference = 'Stop'
Import-Module $env:KVMSTORAGE_PESTER -Force
Import-Module (Join-Path $PSScriptRoot 'Pester/LibvirtDaemon.psm1') -Force

$pesterDir = Join-Path $PSScriptRoot 'Pester'
$files = if ($Path) { $Path | ForEach-Object { if (Test-Path $_) { (Resolve-Path $_).Path } else { Join-Path $pesterDir $_ } } } else { (Get-ChildItem $pesterDir -Filter *.Tests.ps1).FullName }
$dualBackend = 'StoragePool.Tests.ps1', 'Volume.Tests.ps1', 'VMDisk.Tests.ps1'
$exclude = @(if ($env:KVMSTORAGE_PESTER_EXCLUDE) { $env:KVMSTORAGE_PESTER_EXCLUDE -split ',' })

$containers = foreach ($file in $files) {
    if ((Split-Path -Leaf $file) -in $dualBackend) {
        New-PesterContainer -Path $file -Data @{ Backend = 'Offline' }
        New-PesterContainer -Path $file -Data @{ Backend = 'Live' }
    }
    else { New-PesterContainer -Path $file }
}

$config = New-PesterConfiguration
$config.Run.Container = @($containers)
$config.Run.PassThru = $true
$config.Output.Verbosity = 'Normal'
$config.TestResult.Enabled = $true
$config.TestResult.OutputPath = [IO.Path]::ChangeExtension($env:KVMSTORAGE_PESTER_RESULT, '.xml')
if ($exclude) { $config.Filter.ExcludeTag = $exclude }

$daemon = $null
try {
    $reason = if ('Daemon' -in $exclude) { 'the Daemon tag is excluded' } else { Get-TestLibvirtdSkipReason }
    if ($reason) {
        $env:KVMSTORAGE_TEST_LIBVIRT_SKIP = $reason
        Write-Host "Live runs of the pool, volume and VM disk suites are skipped: $reason" -ForegroundColor Yellow
    }
    else {
        $daemonRoot = Join-Path ([IO.Path]::GetTempPath()) "kvmstorage-libvirtd-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        $daemon = Start-TestLibvirtd -Root $daemonRoot
        $env:KVMSTORAGE_TEST_LIBVIRT_URI = $daemon.Uri
        Write-Host "Shared libvirtd for the live runs: PID $($daemon.Pid), $($daemon.Uri)"
    }
    $result = Invoke-Pester -Configuration $config
}
finally {
    if ($daemon) {
        Stop-TestLibvirtd $daemon
        Remove-Item -Recurse -Force -LiteralPath $daemon.Root -ErrorAction SilentlyContinue
    }
    Remove-Item Env:KVMSTORAGE_TEST_LIBVIRT_URI, Env:KVMSTORAGE_TEST_LIBVIRT_SKIP -ErrorAction SilentlyContinue
}
# A container that fails to load (a syntax error, a failing BeforeAll) counts as a failure, not as nothing.
$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
[pscustomobject]@{
    Passed  = $result.PassedCount
    Failed  = $failed
    Skipped = $result.SkippedCount + $result.NotRunCount
} | ConvertTo-Json | Set-Content -Path $env:KVMSTORAGE_PESTER_RESULT
