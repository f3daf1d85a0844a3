#Requires -Version 7.4
# Convert-Volume, Copy-Volume, Import-Volume, Export-Volume against the built module, with qemu-img as the oracle.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemuImg = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)

    function Assert-Same([string] $A, [string] $B, [string] $FormatB) {
        # qemu 7.2 probes a VHD only by the copy of its footer at 0: a fixed VHD needs -F vpc.
        $f = if ($FormatB) { @('-F', $FormatB) } else { @() }
        $out = qemu-img compare -U @f $A $B 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img compare $A $B said: $out"
    }

    function Assert-QemuCheckClean([string] $Path, [string] $Format) {
        # qemu-img has no check for vpc (exit 63, "does not support checks"): the module's own walks its table.
        if ($Format -eq 'vpc') {
            (Test-Volume -Volume $Path).Corruptions | Should -BeNullOrEmpty
            return
        }
        $out = qemu-img check --output=json $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img check $Path said: $out"
    }

    # A pool 'default' with a 16 MiB raw volume disk.img: 2 MiB of random data, 1 MiB of text, holes elsewhere.
    function New-ConvertRoot {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $images = Join-Path $root 'var/lib/libvirt/images'
        $file = Join-Path $images 'disk.img'
        $stream = [IO.File]::Open($file, 'CreateNew', 'Write')
        try {
            $stream.SetLength(16MB)
            $noise = [byte[]]::new(2MB); [Random]::new(7).NextBytes($noise)
            $stream.Write($noise, 0, $noise.Length)
            $stream.Position = 10MB
            $text = [Text.Encoding]::ASCII.GetBytes(('kvm storage ' * 87382).Substring(0, 1MB))
            $stream.Write($text, 0, $text.Length)
        }
        finally { $stream.Dispose() }
        $root
    }

    function Get-TempFiles([string] $Folder) { @(Get-ChildItem -LiteralPath $Folder -Force -Filter '.kvmstorage-tmp-*') }
}

Describe 'Convert-Volume' {
    BeforeEach { $script:root = New-ConvertRoot; $script:images = Join-Path $root 'var/lib/libvirt/images' }

    It 'converts a raw volume to <Format> with the default name and emits it' -ForEach @(
        @{ Format = 'qcow2'; Name = 'disk.qcow2'; Params = @{} }
        @{ Format = 'qcow2'; Name = 'disk.qcow2'; Params = @{ Compress = $true; CompressionType = 'zstd' } }
        @{ Format = 'qcow2'; Name = 'disk.qcow2'; Params = @{ Compat = '0.10'; ClusterSize = '4K' } }
        @{ Format = 'qcow2'; Name = 'disk.qcow2'; Params = @{ Preallocation = 'Metadata' } }
        @{ Format = 'vmdk'; Name = 'disk.vmdk'; Params = @{} }
        @{ Format = 'vhdx'; Name = 'disk.vhdx'; Params = @{}; Type = 'Dynamic' }
        @{ Format = 'vhdx'; Name = 'disk.vhdx'; Params = @{ Fixed = $true; ClusterSize = '1M' }; Type = 'Fixed' }
        @{ Format = 'vpc'; Name = 'disk.vhd'; Params = @{}; Type = 'Dynamic' }
        @{ Format = 'vpc'; Name = 'disk.vhd'; Params = @{ Fixed = $true; ForceSize = $true }; Type = 'Fixed' }
        @{ Format = 'vdi'; Name = 'disk.vdi'; Params = @{}; Type = 'Dynamic' }
        @{ Format = 'vdi'; Name = 'disk.vdi'; Params = @{ Fixed = $true }; Type = 'Fixed' }
    ) {
        $v = Get-Volume -Pool default -Name disk.img | Convert-Volume -Format $Format @Params
        $v | Should -BeOfType ([KvmStorage.Core.Volumes.StorageVolume])
        $v.Name | Should -Be $Name
        $v.Pool | Should -Be 'default'
        $v.Format.ToString().ToLowerInvariant() | Should -Be $Format
        # A VHD's size is rounded up to a CHS geometry, unless -ForceSize records it as it is (whole MiB).
        if ($Format -eq 'vpc' -and -not $Params.ForceSize) { $v.Capacity | Should -BeGreaterOrEqual 16MB } else { $v.Capacity | Should -Be 16MB }
        if ($Type) { $v.DiskType | Should -Be $Type }
        (Get-Item (Join-Path $images $Name)).UnixMode | Should -Be '-rw-------'
        Get-TempFiles $images | Should -BeNullOrEmpty
        if ($hasQemuImg) {
            Assert-QemuCheckClean $v.LocalPath $Format
            Assert-Same (Join-Path $images 'disk.img') $v.LocalPath $Format
        }
    }

    It 'converts to raw under another name and pool, keeping holes' {
        New-StoragePool -Name other -Path /srv/other -Build | Out-Null
        $q = Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2
        $r = Convert-Volume -Volume $q -Format raw -Name back.img -Pool other
        $r.Path | Should -Be '/srv/other/back.img'
        $r.Allocation | Should -BeLessThan 8MB
        (Get-FileHash $r.LocalPath).Hash | Should -Be (Get-FileHash (Join-Path $images 'disk.img')).Hash
    }

    It 'replaces the original in place with -Replace, keeping its name' {
        $before = (Get-FileHash (Join-Path $images 'disk.img')).Hash
        $v = Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2 -Replace -Compress
        $v.Name | Should -Be 'disk.img'
        $v.Format | Should -BeExactly 'qcow2'
        (Get-ChildItem $images -Force).Name | Should -Be @('disk.img')
        if ($hasQemuImg) {
            qemu-img convert -f qcow2 -O raw $v.LocalPath (Join-Path $TestDrive 'back.raw')
            (Get-FileHash (Join-Path $TestDrive 'back.raw')).Hash | Should -Be $before
        }
    }

    It 'refuses -Replace on a backing file and changes nothing' {
        New-Volume -Pool default -Name top.qcow2 -BackingVolume (Join-Path $images 'disk.img') | Out-Null
        $before = Get-TreeSnapshot $root
        { Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2 -Replace -ErrorAction Stop } | Should -Throw -ErrorId 'VolumeIsBackingFile,*'
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'an unknown volume'; Params = @{ Volume = '/nonexistent/x.img'; Format = 'qcow2' }; Id = 'ImageNotFound' }
        @{ Case = 'an existing destination'; Params = @{ Format = 'raw'; Name = 'disk.img' }; Id = 'VolumeAlreadyExists' }
        @{ Case = 'an unknown pool'; Params = @{ Format = 'qcow2'; Pool = 'nope' }; Id = 'PoolNotFound' }
        @{ Case = 'a bad name'; Params = @{ Format = 'qcow2'; Name = '../x.qcow2' }; Id = 'InvalidVolumeName' }
        @{ Case = 'a name contradicting -Format'; Params = @{ Format = 'raw'; Name = 'x.qcow2' }; Id = 'FormatExtensionMismatch' }
        @{ Case = 'compression of raw output'; Params = @{ Format = 'raw'; Name = 'r.raw'; Compress = $true }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a bad cluster size'; Params = @{ Format = 'qcow2'; ClusterSize = 3000 }; Id = 'InvalidConvertOptions' }
        @{ Case = 'compression with preallocation'; Params = @{ Format = 'qcow2'; Compress = $true; Preallocation = 'Full' }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a fixed qcow2'; Params = @{ Format = 'qcow2'; Fixed = $true }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a forced size for vdi'; Params = @{ Format = 'vdi'; ForceSize = $true }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a vhdx block under 1 MiB'; Params = @{ Format = 'vhdx'; ClusterSize = '512K' }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a compressed vhdx'; Params = @{ Format = 'vhdx'; Compress = $true }; Id = 'InvalidConvertOptions' }
        @{ Case = 'a .vhd name for vhdx'; Params = @{ Format = 'vhdx'; Name = 'x.vhd' }; Id = 'FormatExtensionMismatch' }
    ) {
        $before = Get-TreeSnapshot $root
        $p = @{ Volume = (Join-Path $images 'disk.img') }
        foreach ($key in $Params.Keys) { $p[$key] = $Params[$key] }
        { Convert-Volume @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.Volume.ConvertVolumeCommand"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'tells with -Verbose the host, backend and root it works on, and what the work did' {
        $verbose = @(Convert-Volume -Volume /var/lib/libvirt/images/disk.img -Format qcow2 -Verbose 4>&1 | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object Message)
        ($verbose -join "`n") | Should -Match 'offline .*backend, host root '
        ($verbose -join "`n") | Should -Match 'done in [0-9.]+ s, 16 MiB of 16 MiB'
    }

    It 'refuses an unknown format at binding' {
        { Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qed } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
    }

    It 'changes nothing with -WhatIf' {
        $before = Get-TreeSnapshot $root
        Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2 -WhatIf
        Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2 -Replace -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses when the pool''s file system is too small' -Tag Root {
        if ((id -u) -ne '0') { Set-ItResult -Skipped -Because 'mounting a tmpfs needs root'; return }
        $small = Join-Path $root 'srv/small'
        New-StoragePool -Name small -Path /srv/small -Build | Out-Null
        mount -t tmpfs -o size=1M tmpfs $small
        try {
            { Convert-Volume -Volume (Join-Path $images 'disk.img') -Format qcow2 -Pool small -ErrorAction Stop } | Should -Throw -ErrorId 'InsufficientSpace,*'
            @(Get-ChildItem -LiteralPath $small -Force) | Should -BeNullOrEmpty
        }
        finally { umount $small }
    }

    It 'removes the partial output when stopped, and emits nothing' {
        $big = Join-Path $images 'big.img'
        $stream = [IO.File]::Open($big, 'CreateNew', 'Write')
        try {
            $noise = [byte[]]::new(1MB); $rng = [Random]::new(3)
            for ($i = 0; $i -lt 128; $i++) { $rng.NextBytes($noise); $stream.Write($noise, 0, $noise.Length) }
        }
        finally { $stream.Dispose() }
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript({
                    param($Module, $Root, $Source)
                    $env:KVMSTORAGE_ROOT = $Root
                    Import-Module $Module
                    Convert-Volume -Volume $Source -Format qcow2 -Compress
                }).AddArgument($env:KVMSTORAGE_TEST_MODULE).AddArgument($root).AddArgument($big)
            $output = [System.Management.Automation.PSDataCollection[psobject]]::new()
            $async = $ps.BeginInvoke([System.Management.Automation.PSDataCollection[psobject]]::new(), $output)
            $deadline = [DateTime]::UtcNow.AddSeconds(30)
            while ((Get-TempFiles $images).Count -eq 0 -and -not $async.IsCompleted -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 20 }
            $ps.Stop()
            $output.Count | Should -Be 0
            Get-TempFiles $images | Should -BeNullOrEmpty
            Test-Path (Join-Path $images 'big.qcow2') | Should -BeFalse
        }
        finally { $ps.Dispose() }
    }
}

Describe 'Copy-Volume' {
    BeforeEach { $script:root = New-ConvertRoot; $script:images = Join-Path $root 'var/lib/libvirt/images' }

    It 'copies a volume in its own format by default' {
        $c = Get-Volume -Pool default -Name disk.img | Copy-Volume -Name copy.img
        $c.Format | Should -BeExactly 'raw'
        (Get-FileHash $c.LocalPath).Hash | Should -Be (Get-FileHash (Join-Path $images 'disk.img')).Hash
    }

    It 'flattens an overlay unless -KeepBackingFile' {
        $top = New-Volume -Pool default -Name top.qcow2 -BackingVolume (Join-Path $images 'disk.img') -RelativeBackingPath
        $flat = Copy-Volume -Volume $top -Name flat.qcow2
        $flat.BackingPath | Should -BeNullOrEmpty
        $kept = Copy-Volume -Volume $top -Name kept.qcow2 -KeepBackingFile
        $kept.BackingPath | Should -Be '/var/lib/libvirt/images/disk.img'
        $kept.FileLength | Should -BeLessThan 1MB
        if ($hasQemuImg) {
            Assert-Same $top.LocalPath $flat.LocalPath
            Assert-Same $top.LocalPath $kept.LocalPath
            Assert-QemuCheckClean $kept.LocalPath
        }
    }

    It 'makes a linked clone with -Linked' {
        $l = Copy-Volume -Volume (Join-Path $images 'disk.img') -Name linked.qcow2 -Linked
        $l.Format | Should -BeExactly 'qcow2'
        $l.BackingPath | Should -Be '/var/lib/libvirt/images/disk.img'
        $l.BackingFormat | Should -Be 'raw'
    }

    It 'takes the copy''s format from its new name, and refuses a name that contradicts -Format' {
        $q = Copy-Volume -Volume (Join-Path $images 'disk.img') -Name copy.qcow2
        $q.Format | Should -BeExactly 'qcow2'
        $before = Get-TreeSnapshot $root
        { Copy-Volume -Volume (Join-Path $images 'disk.img') -Name copy2.qcow2 -Format raw -ErrorAction Stop } | Should -Throw -ErrorId 'FormatExtensionMismatch,*'
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses an existing name and changes nothing; -WhatIf changes nothing' {
        $before = Get-TreeSnapshot $root
        { Copy-Volume -Volume (Join-Path $images 'disk.img') -Name disk.img -ErrorAction Stop } | Should -Throw -ErrorId 'VolumeAlreadyExists,*'
        Copy-Volume -Volume (Join-Path $images 'disk.img') -Name w.img -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }
}

Describe 'Import-Volume' {
    BeforeEach { $script:root = New-ConvertRoot; $script:images = Join-Path $root 'var/lib/libvirt/images' }

    It 'imports vmdk files piped from Get-ChildItem as qcow2 volumes' -Tag Oracle {
        if (-not $hasQemuImg) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $outside = Join-Path $TestDrive ('in-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory $outside | Out-Null
        qemu-img convert -f raw -O vmdk (Join-Path $images 'disk.img') (Join-Path $outside 'a.vmdk')
        qemu-img convert -f raw -O vmdk -o subformat=streamOptimized (Join-Path $images 'disk.img') (Join-Path $outside 'b.vmdk')
        $v = Get-ChildItem (Join-Path $outside '*.vmdk') | Import-Volume -Pool default
        $v.Name | Should -Be @('a.qcow2', 'b.qcow2')
        foreach ($vol in $v) {
            Assert-QemuCheckClean $vol.LocalPath
            Assert-Same (Join-Path $images 'disk.img') $vol.LocalPath
        }
    }

    It 'imports in the format the new name says' {
        $v = Import-Volume -Path (Join-Path $images 'disk.img') -Pool default -Name imported.vmdk
        $v.Format | Should -BeExactly 'vmdk'
    }

    It 'imports as raw under a given name' {
        $v = Import-Volume -Path (Join-Path $images 'disk.img') -Pool default -Name imported.raw -Format raw
        $v.Format | Should -BeExactly 'raw'
        (Get-FileHash $v.LocalPath).Hash | Should -Be (Get-FileHash (Join-Path $images 'disk.img')).Hash
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'a missing file'; Params = @{ Path = '/nonexistent/a.vmdk'; Pool = 'default' }; Id = 'ImageNotFound' }
        @{ Case = 'an unknown pool'; Params = @{ Pool = 'nope' }; Id = 'PoolNotFound' }
        @{ Case = 'an existing name'; Params = @{ Pool = 'default'; Name = 'disk.img' }; Id = 'VolumeAlreadyExists' }
        @{ Case = 'a name contradicting -Format'; Params = @{ Pool = 'default'; Name = 'new.qcow2'; Format = 'vmdk' }; Id = 'FormatExtensionMismatch' }
    ) {
        $before = Get-TreeSnapshot $root
        $p = @{ Path = (Join-Path $images 'disk.img') }
        foreach ($key in $Params.Keys) { $p[$key] = $Params[$key] }
        { Import-Volume @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.Volume.ImportVolumeCommand"
        Import-Volume -Path (Join-Path $images 'disk.img') -Pool default -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }
}

Describe 'Export-Volume' {
    BeforeEach { $script:root = New-ConvertRoot; $script:images = Join-Path $root 'var/lib/libvirt/images' }

    It 'exports a streamOptimized vmdk named by the destination''s extension and emits it' {
        $dest = Join-Path $TestDrive ('export-' + [guid]::NewGuid().ToString('N').Substring(0, 8) + '.vmdk')
        $v = Get-Volume -Pool default -Name disk.img | Export-Volume -Destination $dest
        $v.Format | Should -BeExactly 'vmdk'
        $v.LocalPath | Should -Be $dest
        if ($hasQemuImg) {
            (qemu-img info --output=json $dest | ConvertFrom-Json -AsHashtable)['format-specific']['data']['create-type'] | Should -Be 'streamOptimized'
            Assert-QemuCheckClean $dest
            Assert-Same (Join-Path $images 'disk.img') $dest
        }
    }

    It 'exports a fixed VHD for Azure: the size rounded up to whole MiB, read by qemu as its source' {
        $odd = New-Volume -Pool default -Name odd.qcow2 -Size 10000000
        $dest = Join-Path $TestDrive ('azure-' + [guid]::NewGuid().ToString('N').Substring(0, 8) + '.vhd')
        $v = $odd | Export-Volume -Destination $dest -Fixed -ForceSize
        $v.Format | Should -BeExactly 'vpc'
        $v.DiskType | Should -Be 'Fixed'
        $v.Capacity | Should -Be 10MB
        $v.FileLength | Should -Be (10MB + 512)
        if ($hasQemuImg) {
            (qemu-img info -f vpc --output=json $dest | ConvertFrom-Json).'virtual-size' | Should -Be 10MB
            Assert-Same $odd.LocalPath $dest 'vpc'
        }
    }

    It 'exports <Format> named by the destination''s extension' -ForEach @(
        @{ Extension = 'vhdx'; Format = 'vhdx' }
        @{ Extension = 'vhd'; Format = 'vpc' }
        @{ Extension = 'vdi'; Format = 'vdi' }
    ) {
        $dest = Join-Path $TestDrive ('export-' + [guid]::NewGuid().ToString('N').Substring(0, 8) + ".$Extension")
        $v = Export-Volume -Volume (Join-Path $images 'disk.img') -Destination $dest
        $v.Format | Should -BeExactly $Format
        $v.DiskType | Should -Be 'Dynamic'
        if ($hasQemuImg) {
            # qemu-img checks vhdx and vdi; a vpc outside the host root is checked by neither qemu-img nor Test-Volume.
            if ($Format -ne 'vpc') { Assert-QemuCheckClean $dest $Format }
            Assert-Same (Join-Path $images 'disk.img') $dest
        }
    }

    It 'refuses <Case> and writes nothing' -ForEach @(
        @{ Case = 'an existing destination'; Destination = 'exists.qcow2'; Id = 'DestinationExists' }
        @{ Case = 'a missing folder'; Destination = 'missing/x.qcow2'; Id = 'DestinationFolderNotFound' }
    ) {
        $folder = Join-Path $TestDrive ('exp-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
        New-Item -ItemType Directory $folder | Out-Null
        Set-Content (Join-Path $folder 'exists.qcow2') 'keep'
        $before = Get-TreeSnapshot $folder
        { Export-Volume -Volume (Join-Path $images 'disk.img') -Destination (Join-Path $folder $Destination) -ErrorAction Stop } | Should -Throw -ErrorId "$Id,KvmStorage.Commands.Volume.ExportVolumeCommand"
        Export-Volume -Volume (Join-Path $images 'disk.img') -Destination (Join-Path $folder 'w.qcow2') -WhatIf
        Get-TreeSnapshot $folder | Should -Be $before
    }
}
