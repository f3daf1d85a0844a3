#Requires -Version 7.4
# The built module's surface: manifest against the DLL, version source, format views, ShouldProcess.

BeforeDiscovery {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    $script:cmdlets = @(Get-Command -Module KvmStorage -CommandType Cmdlet | Sort-Object Name | ForEach-Object { @{ Name = $_.Name; Verb = $_.Verb } })
    $mutatingVerbs = 'New', 'Set', 'Remove', 'Add', 'Resize', 'Convert', 'Copy', 'Import', 'Export', 'Merge', 'Optimize', 'Restore', 'Start', 'Stop', 'Update', 'Clear'
    $script:mutators = @($cmdlets | Where-Object { $_.Verb -in $mutatingVerbs })
    # Remove-VMDisk only detaches (Medium) and asks as High only when -DeleteVolume deletes the image; PipelineSafety
    # checks that in a non-interactive child.
    $script:removers = @($cmdlets | Where-Object { $_.Verb -eq 'Remove' -and $_.Name -ne 'Remove-VMDisk' })
}

BeforeAll {
    $module = Import-Module $env:KVMSTORAGE_TEST_MODULE -Force -PassThru
    $manifest = Import-PowerShellDataFile -Path $env:KVMSTORAGE_TEST_MODULE
    $assembly = [KvmStorage.Infrastructure.KvmCmdlet].Assembly
}

Describe 'Module manifest' {
    It 'exports exactly the cmdlets the DLL defines' {
        $defined = @($assembly.GetExportedTypes() |
                Where-Object { -not $_.IsAbstract -and $_.IsSubclassOf([System.Management.Automation.Cmdlet]) } |
                ForEach-Object { $a = $_.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0]; "$($a.VerbName)-$($a.NounName)" } |
                Sort-Object)
        @($manifest.CmdletsToExport | Sort-Object) | Should -Be $defined
        @(Get-Command -Module KvmStorage -CommandType Cmdlet | ForEach-Object Name | Sort-Object) | Should -Be $defined
    }

    It 'exports no functions, aliases or variables' {
        @($manifest.FunctionsToExport) | Should -BeNullOrEmpty
        @($manifest.AliasesToExport) | Should -BeNullOrEmpty
        @($manifest.VariablesToExport) | Should -BeNullOrEmpty
        $module.ExportedFunctions.Count | Should -Be 0
        $module.ExportedAliases.Count | Should -Be 0
        $module.ExportedVariables.Count | Should -Be 0
    }

    It 'carries the gallery metadata: tags, license, release notes, and the same in the package' {
        $psData = $manifest.PrivateData.PSData
        @($psData.Tags) | Should -Contain 'KVM'
        @($psData.Tags) | Should -Contain 'libvirt'
        @($psData.Tags | Where-Object { $_ -match '\s' }) | Should -BeNullOrEmpty -Because 'a gallery tag has no spaces'
        [uri]::IsWellFormedUriString($psData.LicenseUri, 'Absolute') | Should -BeTrue
        $psData.ReleaseNotes | Should -Match "^$([regex]::Escape($manifest.ModuleVersion)):"
        $manifest.Description | Should -Not -BeNullOrEmpty
        $manifest.Author | Should -Not -BeNullOrEmpty
        # The package the Package task makes for Install-PSResource (out/repository next to out/KvmStorage).
        $outFolder = Split-Path (Split-Path (Split-Path $env:KVMSTORAGE_TEST_MODULE -Parent) -Parent) -Parent
        $package = Join-Path $outFolder "repository/KvmStorage.$($manifest.ModuleVersion).nupkg"
        Test-Path -LiteralPath $package | Should -BeTrue -Because 'the Package task makes it'
        Add-Type -AssemblyName System.IO.Compression.FileSystem
        $zip = [IO.Compression.ZipFile]::OpenRead($package)
        try {
            $reader = [IO.StreamReader]::new($zip.GetEntry('KvmStorage.nuspec').Open())
            $nuspec = [xml]$reader.ReadToEnd(); $reader.Dispose()
        }
        finally { $zip.Dispose() }
        $nuspec.package.metadata.tags -split ' ' | Should -Contain 'libvirt'
        $nuspec.package.metadata.licenseUrl | Should -Be $psData.LicenseUri
        $nuspec.package.metadata.releaseNotes | Should -Be $psData.ReleaseNotes
    }

    It 'is for PowerShell 7.4 Core' {
        @($manifest.CompatiblePSEditions) | Should -Be @('Core')
        $manifest.PowerShellVersion | Should -Be '7.4'
    }

    It 'has the version of Directory.Build.props' {
        $props = [xml](Get-Content -Raw (Join-Path $PSScriptRoot '../../Directory.Build.props'))
        $expected = @($props.Project.PropertyGroup.KvmStorageVersion | Where-Object { $_ })[0]
        $expected | Should -Not -BeNullOrEmpty
        $manifest.ModuleVersion | Should -Be $expected
        $module.Version | Should -Be ([version]$expected)
    }
}

Describe 'Output of <Name>' -ForEach $cmdlets {
    It 'has a format view for every KvmStorage output type' {
        $types = @((Get-Command -Module KvmStorage -Name $Name).OutputType | ForEach-Object Name | Where-Object { $_ -like 'KvmStorage.*' })
        foreach ($type in $types) {
            Get-FormatData -TypeName $type | Should -Not -BeNullOrEmpty -Because "$type is emitted by $Name"
        }
    }
}

Describe '<Name> supports ShouldProcess' -ForEach $mutators {
    It 'declares SupportsShouldProcess' {
        $type = (Get-Command -Module KvmStorage -Name $Name).ImplementingType
        $type.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0].SupportsShouldProcess | Should -BeTrue
        (Get-Command -Module KvmStorage -Name $Name).Parameters.Keys | Should -Contain 'WhatIf'
    }
}

Describe '<Name> asks before deleting' -ForEach $removers {
    It 'has ConfirmImpact High' {
        $type = (Get-Command -Module KvmStorage -Name $Name).ImplementingType
        $type.GetCustomAttributes([System.Management.Automation.CmdletAttribute], $false)[0].ConfirmImpact | Should -Be ([System.Management.Automation.ConfirmImpact]::High)
    }
}

Describe 'Import-Module -Prefix Kvm' {
    # The way around a clash with another module's Get-StoragePool, New-Volume, Get-Volume, …: every noun gets the
    # prefix once, so no command reads Kvm twice, and the prefixed commands work. In a child pwsh, so this session's
    # module stays unprefixed.
    It 'gives every cmdlet one Kvm prefix, and the prefixed commands run' {
        $exe = [Environment]::ProcessPath
        $first = [Environment]::GetCommandLineArgs()[0]
        [string[]] $pre = @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet' -and $first -like '*.dll') { $first })
        $module = $env:KVMSTORAGE_TEST_MODULE -replace "'", "''"
        $script = "Import-Module '$module' -Prefix Kvm; (Get-Command -Module KvmStorage).Name; '---'; (Get-KvmLibvirtHost | Measure-Object).Count; (Get-Help Get-KvmStoragePool).Synopsis"
        $out = @(& $exe @pre -NoProfile -NonInteractive -Command $script 2>&1 | ForEach-Object { "$_" })
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $split = [array]::IndexOf($out, '---')
        $names = @($out[0..($split - 1)])
        $names.Count | Should -Be $manifest.CmdletsToExport.Count
        foreach ($n in $names) {
            $verb, $noun = $n -split '-', 2
            $noun | Should -BeLike 'Kvm*' -Because "$n carries the prefix"
            $noun.Substring(3) | Should -Not -Match '^kvm' -Because "$n reads Kvm once"
            ($noun.Substring(3) -in ($manifest.CmdletsToExport | ForEach-Object { ($_ -split '-', 2)[1] })) | Should -BeTrue
        }
        $out[$split + 1] | Should -Be '0' -Because 'Get-KvmLibvirtHost runs and lists no connection in a fresh session'
        $out[$split + 2] | Should -Not -BeNullOrEmpty -Because 'help follows the prefixed name'
    }
}
