#Requires -Version 7.4
# Measure-Volume against the built module, with qemu-img measure as the oracle: the same figures for volumes of a
# pool (named every way the volume cmdlets take) and for new images of a size; the module's own figures for vhdx,
# vpc and vdi equal what Export-Volume writes; refusals are typed and nothing is ever written.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    $script:errorSuffix = 'KvmStorage.Commands.Volume.MeasureVolumeCommand'

    function Get-QemuMeasure([string[]] $Arguments) {
        $json = qemu-img measure --output=json @Arguments 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img measure $Arguments said: $json"
        $json | ConvertFrom-Json
    }

    $script:root = New-TestHostRoot
    New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
    $script:images = Join-Path $root 'var/lib/libvirt/images'
    New-Volume -Pool default -Name base.qcow2 -Size 64MB | Out-Null
    New-Volume -Pool default -Name clone.qcow2 -BackingVolume (Get-Volume -Pool default -Name base.qcow2) -RelativeBackingPath | Out-Null
    New-Volume -Pool default -Name data.img -Size 32MB -Format raw | Out-Null
    if ($hasQemu) {
        qemu-io -f qcow2 -c 'write -P 1 0 3M' -c 'write -z 8M 1M' -c 'write -c -P 2 20M 256k' "$images/base.qcow2" | Out-Null
        qemu-io -f qcow2 -c 'write -P 3 40M 1M' -c 'write -P 4 63M 4k' "$images/clone.qcow2" | Out-Null
        qemu-io -f raw -c 'write -P 5 1M 2M' -c 'write -P 6 30M 100k' "$images/data.img" | Out-Null
    }
}

Describe 'Measure-Volume' {
    It 'equals qemu-img measure for <Volume> -Format <Format> <Options>' -Tag Oracle -ForEach @(
        @{ Volume = 'clone.qcow2'; Format = 'qcow2'; Options = ''; Params = @{} }
        @{ Volume = 'clone.qcow2'; Format = 'qcow2'; Options = 'compat=0.10,cluster_size=4k'; Params = @{ Compat = '0.10'; ClusterSize = '4K' } }
        @{ Volume = 'clone.qcow2'; Format = 'qcow2'; Options = 'preallocation=full'; Params = @{ Preallocation = 'Full' } }
        @{ Volume = 'clone.qcow2'; Format = 'qcow2'; Options = 'backing_file=base.qcow2'; Params = @{ Overlay = $true } }
        @{ Volume = 'data.img'; Format = 'qcow2'; Options = 'cluster_size=2M,refcount_bits=64'; Params = @{ ClusterSize = '2M'; RefcountBits = '64' } }
        @{ Volume = 'data.img'; Format = 'qcow2'; Options = 'extended_l2=on'; Params = @{ ExtendedL2 = $true } }
        @{ Volume = 'data.img'; Format = 'raw'; Options = ''; Params = @{} }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $o = if ($Options) { @('-o', $Options) } else { @() }
        $q = Get-QemuMeasure (@('-O', $Format) + $o + @(Join-Path $images $Volume))
        $m = Get-Volume -Pool default -Name $Volume | Measure-Volume -Format $Format @Params
        $m | Should -BeOfType ([KvmStorage.Core.Images.Measure.ImageMeasurement])
        $m.RequiredBytes | Should -Be $q.required
        $m.FullyAllocatedBytes | Should -Be $q.'fully-allocated'
        $m.QemuCompatible | Should -BeTrue
        $m.Path | Should -Be "/var/lib/libvirt/images/$Volume"
    }

    It 'equals qemu-img measure --size for a new image (<Options>)' -Tag Oracle -ForEach @(
        @{ Options = ''; Params = @{} }
        @{ Options = 'preallocation=falloc,cluster_size=512'; Params = @{ Preallocation = 'Falloc'; ClusterSize = 512 } }
        @{ Options = 'refcount_bits=1'; Params = @{ RefcountBits = '1' } }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $o = if ($Options) { @('-o', $Options) } else { @() }
        $q = Get-QemuMeasure (@('--size', '100G', '-O', 'qcow2') + $o)
        $m = Measure-Volume -Size 100GB -Format qcow2 @Params
        $m.RequiredBytes | Should -Be $q.required
        $m.FullyAllocatedBytes | Should -Be $q.'fully-allocated'
        $m.Path | Should -BeNullOrEmpty
    }

    It 'measures every volume named: -Pool/-Name, -Path wildcards, the pipeline' {
        @(Measure-Volume -Pool default -Name base.qcow2, data.img -Format raw).Path | Should -Be @('/var/lib/libvirt/images/base.qcow2', '/var/lib/libvirt/images/data.img')
        @(Measure-Volume -Path /var/lib/libvirt/images/*.qcow2 -Format raw).Count | Should -Be 2
        @(Get-Volume -Pool default | Measure-Volume -Format qcow2).Count | Should -Be 3
    }

    It 'gives for <Format> <Kind> what Export-Volume writes (qemu cannot measure it)' -ForEach @(
        @{ Format = 'vhdx'; Kind = 'fixed'; Params = @{ Fixed = $true } }
        @{ Format = 'vpc'; Kind = 'fixed'; Params = @{ Fixed = $true; ForceSize = $true } }
        @{ Format = 'vdi'; Kind = 'static'; Params = @{ Fixed = $true } }
    ) {
        $m = Measure-Volume -Volume /var/lib/libvirt/images/clone.qcow2 -Format $Format @Params
        $m.QemuCompatible | Should -BeFalse
        $dest = Join-Path $TestDrive ("measured-$Format-" + [guid]::NewGuid().ToString('N').Substring(0, 6) + ".$Format")
        $e = Export-Volume -Volume /var/lib/libvirt/images/clone.qcow2 -Destination $dest -Format $Format @Params
        $e.FileLength | Should -Be $m.RequiredBytes
        $e.Capacity | Should -Be $m.VirtualSize
    }

    It 'refuses <Case> and writes nothing' -ForEach @(
        @{ Case = 'extended L2 entries with 8 KiB clusters'; Params = @{ Format = 'qcow2'; ExtendedL2 = $true; ClusterSize = '8K' }; Id = 'InvalidMeasureOptions' }
        @{ Case = 'refcounts other than 16 bits with compat 0.10'; Params = @{ Format = 'qcow2'; Compat = '0.10'; RefcountBits = '8' }; Id = 'InvalidMeasureOptions' }
        @{ Case = 'a forced size for qcow2'; Params = @{ Format = 'qcow2'; ForceSize = $true }; Id = 'InvalidMeasureOptions' }
        @{ Case = 'a fixed qcow2'; Params = @{ Format = 'qcow2'; Fixed = $true }; Id = 'InvalidMeasureOptions' }
        @{ Case = 'a missing volume'; Params = @{ Format = 'qcow2'; Volume = '/var/lib/libvirt/images/missing.qcow2' }; Id = 'ImageNotFound' }
    ) {
        $before = Get-TreeSnapshot $root
        $p = @{ Volume = '/var/lib/libvirt/images/clone.qcow2' }
        foreach ($k in $Params.Keys) { $p[$k] = $Params[$k] }
        { Measure-Volume @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses vmdk, which qemu-img cannot measure either, at binding' {
        { Measure-Volume -Size 1GB -Format vmdk } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
    }
}
