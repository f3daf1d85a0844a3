#Requires -Version 7.4
# Get-VolumeMap against the built module, with qemu-img map --output=json as the oracle: the same entries, field by
# field, for a raw volume with holes, a qcow2 with zero and compressed clusters and a 2-level chain; host paths for
# the files; ranges; typed refusals; nothing written.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    $script:errorSuffix = 'KvmStorage.Commands.Volume.GetVolumeMapCommand'

    function ConvertTo-Line($e) {
        $offset = if ($null -ne $e.offset) { $e.offset } else { '-' }
        "$($e.start) $($e.length) depth $($e.depth) present $($e.present) zero $($e.zero) data $($e.data) offset $offset"
    }

    function Get-QemuMap([string] $Path, [string[]] $More = @()) {
        # Written out first: while the kernel writes a file out, its holes can still move.
        & sync $Path
        $json = qemu-img map --output=json @More $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img map said: $json"
        @(($json -join "`n") | ConvertFrom-Json | ForEach-Object { ConvertTo-Line $_ })
    }

    $script:root = New-TestHostRoot
    New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
    $script:images = Join-Path $root 'var/lib/libvirt/images'
    New-Volume -Pool default -Name base.qcow2 -Size 16MB | Out-Null
    New-Volume -Pool default -Name mid.qcow2 -BackingVolume (Get-Volume -Pool default -Name base.qcow2) -RelativeBackingPath | Out-Null
    New-Volume -Pool default -Name top.qcow2 -BackingVolume (Get-Volume -Pool default -Name mid.qcow2) -RelativeBackingPath | Out-Null
    New-Volume -Pool default -Name data.img -Size 8MB -Format raw | Out-Null
    if ($hasQemu) {
        qemu-io -f qcow2 -c 'write -P 1 0 2M' -c 'write -z 4M 1M' -c 'write -c -P 2 8M 128k' "$images/base.qcow2" | Out-Null
        qemu-io -f qcow2 -c 'write -P 3 1M 2M' -c 'write -z 8M 64k' "$images/mid.qcow2" | Out-Null
        qemu-io -f qcow2 -c 'write -P 4 1536k 64k' -c 'write -z -u 12M 64k' "$images/top.qcow2" | Out-Null
        qemu-io -f raw -c 'write -P 5 64k 128k' -c 'write -P 6 7M 4k' "$images/data.img" | Out-Null
    }
}

Describe 'Get-VolumeMap' {
    It 'equals qemu-img map --output=json for <Volume>' -Tag Oracle -ForEach @(
        @{ Volume = 'data.img' }
        @{ Volume = 'base.qcow2' }
        @{ Volume = 'top.qcow2' }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $expected = Get-QemuMap (Join-Path $images $Volume)
        $map = @(Get-Volume -Pool default -Name $Volume | Get-VolumeMap)
        $map[0] | Should -BeOfType ([KvmStorage.Core.Images.Map.MapExtent])
        @($map | ForEach-Object { ConvertTo-Line ([pscustomobject]@{ start = $_.Start; length = $_.Length; depth = $_.Depth; present = $_.Present; zero = $_.Zero; data = $_.Data; offset = $_.Offset }) }) |
            Should -Be $expected
        ($map | Measure-Object Length -Sum).Sum | Should -Be (Get-Volume -Pool default -Name $Volume).Capacity
    }

    It 'names the file of each run as the host sees it, and the volume mapped' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $map = Get-VolumeMap -Volume /var/lib/libvirt/images/top.qcow2
        ($map | Where-Object Depth -EQ 2 | Where-Object Offset | Select-Object -First 1).File | Should -Be '/var/lib/libvirt/images/base.qcow2'
        ($map | Where-Object Depth -EQ 1 | Where-Object Offset | Select-Object -First 1).File | Should -Be '/var/lib/libvirt/images/mid.qcow2'
        @($map.Path | Select-Object -Unique) | Should -Be '/var/lib/libvirt/images/top.qcow2'
    }

    It 'maps a range as qemu-img map --start-offset and --max-length' -Tag Oracle {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img is not installed'; return }
        $expected = Get-QemuMap (Join-Path $images 'top.qcow2') @('--start-offset', '1000000', '--max-length', '3000000')
        $map = Get-VolumeMap -Pool default -Name top.qcow2 -StartOffset 1000000 -Length 3000000
        @($map | ForEach-Object { ConvertTo-Line ([pscustomobject]@{ start = $_.Start; length = $_.Length; depth = $_.Depth; present = $_.Present; zero = $_.Zero; data = $_.Data; offset = $_.Offset }) }) |
            Should -Be $expected
    }

    It 'refuses <Case> and writes nothing' -ForEach @(
        @{ Case = 'a start past the end'; Params = @{ Volume = '/var/lib/libvirt/images/data.img'; StartOffset = 9MB }; Id = 'BlockRangeOutOfBounds' }
        @{ Case = 'a missing volume'; Params = @{ Volume = '/var/lib/libvirt/images/missing.qcow2' }; Id = 'ImageNotFound' }
    ) {
        $before = Get-TreeSnapshot $root
        { Get-VolumeMap @Params -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'refuses a pool piped in (never read as all of its volumes)' {
        { Get-StoragePool default | Get-VolumeMap -ErrorAction Stop } | Should -Throw -ErrorId "VolumeNotNamed,$errorSuffix"
    }

    It 'refuses an encrypted volume without its passphrase, and maps it with it' {
        $pw = ConvertTo-SecureString 'map passphrase' -AsPlainText -Force
        New-Volume -Pool default -Name secure.qcow2 -Size 4MB -Encrypt -Passphrase $pw -IterationTime 10 | Out-Null
        { Get-VolumeMap -Pool default -Name secure.qcow2 -ErrorAction Stop } | Should -Throw -ErrorId "PassphraseRequired,$errorSuffix"
        $map = @(Get-VolumeMap -Pool default -Name secure.qcow2 -Passphrase $pw)
        ($map | Measure-Object Length -Sum).Sum | Should -Be 4MB
        @($map | Where-Object Offset) | Should -BeNullOrEmpty -Because 'qemu gives no offsets in an encrypted image'
    }
}
