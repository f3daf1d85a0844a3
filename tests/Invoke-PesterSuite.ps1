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
#>
$ErrorActionPreference = 'Stop'
Import-Module $env:KVMSTORAGE_PESTER -Force

$config = New-PesterConfiguration
$config.Run.Path = Join-Path $PSScriptRoot 'Pester'
$config.Run.PassThru = $true
$config.Output.Verbosity = 'Normal'
$config.TestResult.Enabled = $true
$config.TestResult.OutputPath = [IO.Path]::ChangeExtension($env:KVMSTORAGE_PESTER_RESULT, '.xml')
if ($env:KVMSTORAGE_PESTER_EXCLUDE) { $config.Filter.ExcludeTag = $env:KVMSTORAGE_PESTER_EXCLUDE -split ',' }

$result = Invoke-Pester -Configuration $config
# A container that fails to load (a syntax error, a failing BeforeAll) counts as a failure, not as nothing.
$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
[pscustomobject]@{
    Passed  = $result.PassedCount
    Failed  = $failed
    Skipped = $result.SkippedCount + $result.NotRunCount
} | ConvertTo-Json | Set-Content -Path $env:KVMSTORAGE_PESTER_RESULT
