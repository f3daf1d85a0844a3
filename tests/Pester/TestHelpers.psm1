# Shared by the Pester suites: a scratch host root per test and the built module.

function New-TestHostRoot {
    <# Creates an empty host root under $TestDrive and makes it the session's root. #>
    param([string] $Name = 'host')
    $root = Join-Path $TestDrive ("$Name-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
    New-Item -ItemType Directory -Path $root | Out-Null
    $env:KVMSTORAGE_ROOT = $root
    $root
}

function Get-TreeSnapshot {
    <# Every file under a folder with its length, mode, link target and content hash (for large, mostly sparse
       images: the modification time instead): compare two snapshots to prove nothing changed. #>
    param([Parameter(Mandatory)] [string] $Path)
    if (-not (Test-Path $Path)) { return @() }
    Get-ChildItem -LiteralPath $Path -Recurse -Force | Sort-Object FullName | ForEach-Object {
        # Lock files are empty; a child process being forked elsewhere may briefly hold their lock.
        $hash = if ($_.PSIsContainer -or $_.LinkTarget -or $_.Name -like '*.lock') { '' }
        elseif ($_.Length -le 16MB) { (Get-FileHash -LiteralPath $_.FullName -Algorithm SHA256).Hash }
        else { $_.LastWriteTimeUtc.Ticks }
        '{0}|{1}|{2}|{3}|{4}' -f $_.FullName.Substring($Path.Length), $_.UnixMode, $(if ($_.PSIsContainer) { 'd' } else { $_.Length }), $_.LinkTarget, $hash
    }
}

Export-ModuleMember -Function New-TestHostRoot, Get-TreeSnapshot
