#Requires -Version 7.4
# The README's install section, as written: the Package task's out/repository holds the .nupkg, and
# Register-PSResourceRepository + Install-PSResource install the module from it. Run in a child pwsh whose HOME is a
# scratch folder, so the user's own repositories and modules are not touched.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    $script:repository = Join-Path (Split-Path -Parent (Split-Path -Parent $env:KVMSTORAGE_TEST_MODULE)) '../repository'
    $script:repository = [IO.Path]::GetFullPath($repository)
}

Describe 'Installing from the package (README, Install)' {
    It 'Package made the .nupkg of the built version' {
        $version = (Import-PowerShellDataFile $env:KVMSTORAGE_TEST_MODULE).ModuleVersion
        Test-Path -LiteralPath (Join-Path $repository "KvmStorage.$version.nupkg") | Should -BeTrue
    }

    It 'installs with the README''s commands and imports by name' {
        $readme = Get-Content -Raw (Join-Path $PSScriptRoot '../../README.md')
        $section = $readme.Substring($readme.IndexOf('## Install'))
        $section = $section.Substring(0, $section.IndexOf('## The main job'))
        $commands = @([regex]::Matches($section, '(?m)^    (Register-PSResourceRepository|Install-PSResource|Import-Module KvmStorage$).*$').Value.Trim())
        $commands.Count | Should -Be 3
        $scratchHome = Join-Path $TestDrive ('home-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory $scratchHome | Out-Null
        $script = ($commands -join "`n") + "`n" + '"commands: " + @(Get-Command -Module KvmStorage).Count; "from: " + (Get-Module KvmStorage).ModuleBase'
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        [string[]] $prefix = @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $first })
        $saved = $env:HOME
        try {
            $env:HOME = $scratchHome
            # The README runs from the repository's folder: ./out/repository is relative to it.
            Push-Location (Join-Path $PSScriptRoot '../..')
            try { $out = & $exe @prefix -NoProfile -NonInteractive -Command $script 2>&1 | ForEach-Object { "$_" } }
            finally { Pop-Location }
        }
        finally { $env:HOME = $saved }
        $count = [int](($out | Where-Object { $_ -like 'commands: *' }) -replace 'commands: ', '')
        $count | Should -Be @(Get-Command -Module KvmStorage -ErrorAction SilentlyContinue).Count -Because ($out -join "`n")
        $count | Should -BeGreaterThan 20
        ($out | Where-Object { $_ -like 'from: *' }) | Should -BeLike "from: $scratchHome*" -Because 'the module comes from the installed copy'
    }
}
