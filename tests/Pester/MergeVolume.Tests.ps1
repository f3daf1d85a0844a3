#Requires -Version 7.4
# Merge-Volume against the built module, with qemu-img and qemu-io as the oracles: the overlay's guest view is saved
# with qemu-img convert before the merge and compared (qemu-img compare) with the overlay and the base afterwards.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-io -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-img -ErrorAction SilentlyContinue)
    $script:kvm1Xml = Join-Path $PSScriptRoot '../../examples/kvm1.xml'
    $script:errorSuffix = 'KvmStorage.Commands.Volume.MergeVolumeCommand'

    function Assert-QemuCheckClean([string] $Path) {
        $out = qemu-img check --output=json $Path 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img check $Path said: $out"
    }

    function Assert-SameView([string] $Image, [string] $Raw) {
        $out = qemu-img compare -U $Image $Raw 2>&1
        $LASTEXITCODE | Should -Be 0 -Because "qemu-img compare $Image $Raw said: $out"
    }

    function Save-View([string] $Image, [string] $Name) {
        $raw = Join-Path $TestDrive ("$Name-" + [guid]::NewGuid().ToString('N').Substring(0, 8) + '.raw')
        qemu-img convert -U -O raw $Image $raw
        $LASTEXITCODE | Should -Be 0
        $raw
    }

    # A pool with base.<format> and a chain of <Depth> qcow2 overlays layer1..layerN, each with data of its own.
    function New-ChainHost([string] $BaseFormat = 'qcow2', [int] $Depth = 1) {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $images = Join-Path $root 'var/lib/libvirt/images'
        $base = Join-Path $images "base.$BaseFormat"
        qemu-img create -q -f $BaseFormat $base 8M
        $null = qemu-io -f $BaseFormat -c 'write -P 0xa0 0 4M' $base
        $writes = @(
            @('write -P 0xa1 512k 1M', 'write -P 0xb1 6M 64k'),
            @('write -P 0xa2 1025k 300k', 'write -z 3M 64k'),
            @('write -P 0xa3 2M 513k', 'write -P 0xb3 700k 1'))
        $below = "base.$BaseFormat"
        $belowFormat = $BaseFormat
        for ($i = 1; $i -le $Depth; $i++) {
            $layer = Join-Path $images "layer$i.qcow2"
            qemu-img create -q -f qcow2 -b $below -F $belowFormat $layer 8M
            $null = qemu-io @($writes[$i - 1] | ForEach-Object { '-c', $_ }) $layer
            $below = "layer$i.qcow2"
            $belowFormat = 'qcow2'
        }
        $root
    }

    function New-VMDefinition([string] $Root, [string] $Name = 'kvm1') {
        $qemu = Join-Path $Root 'etc/libvirt/qemu'
        New-Item -ItemType Directory -Force $qemu | Out-Null
        $text = (Get-Content -Raw $kvm1Xml) -replace 'kvm1', $Name -replace '<uuid>[^<]+</uuid>', "<uuid>$([guid]::NewGuid())</uuid>"
        [IO.File]::WriteAllText((Join-Path $qemu "$Name.xml"), $text)
    }

    function Set-VMRunning([string] $Root, [string] $Name = 'kvm1') {
        New-Item -ItemType Directory -Force (Join-Path $Root 'run/libvirt/qemu') | Out-Null
        Set-Content (Join-Path $Root "run/libvirt/qemu/$Name.xml") "<domstatus state='running' reason='booted' pid='1'><domain type='qemu'><name>$Name</name></domain></domstatus>"
    }
}

Describe 'Merge-Volume' -Tag Oracle {
    BeforeEach {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img and qemu-io are not installed'; return }
    }

    It 'commits a depth-<Depth> chain into its <BaseFormat> base and empties the overlay' -ForEach @(
        @{ BaseFormat = 'raw'; Depth = 1 }
        @{ BaseFormat = 'qcow2'; Depth = 1 }
        @{ BaseFormat = 'qcow2'; Depth = 2 }
    ) {
        $root = New-ChainHost $BaseFormat $Depth
        $images = Join-Path $root 'var/lib/libvirt/images'
        $top = Join-Path $images "layer$Depth.qcow2"
        $before = Save-View $top 'before'
        $base = Get-Volume -Pool default -Name "layer$Depth.qcow2" | Merge-Volume -PassThru
        $base | Should -BeOfType ([KvmStorage.Core.Volumes.StorageVolume])
        $base.Name | Should -Be $(if ($Depth -eq 1) { "base.$BaseFormat" } else { "layer$($Depth - 1).qcow2" })
        Assert-SameView $top $before
        Assert-SameView $base.LocalPath $before
        Assert-QemuCheckClean $top
        if ($base.Format -eq 'Qcow2') { Assert-QemuCheckClean $base.LocalPath }
        $map = (qemu-img map -U --output=json $top) -join "`n" | ConvertFrom-Json
        @($map | Where-Object { $_.depth -eq 0 -and $_.present }) | Should -BeNullOrEmpty -Because 'the overlay is emptied'
    }

    It 'merges a depth-3 chain down to -Base <BaseFormat> and removes the layers with -RemoveOverlay' -ForEach @(
        @{ BaseFormat = 'raw' }
        @{ BaseFormat = 'qcow2' }
    ) {
        $root = New-ChainHost $BaseFormat 3
        $images = Join-Path $root 'var/lib/libvirt/images'
        $before = Save-View (Join-Path $images 'layer3.qcow2') 'before'
        Merge-Volume -Volume (Join-Path $images 'layer3.qcow2') -Base (Get-Volume -Pool default -Name "base.$BaseFormat") -RemoveOverlay
        @(Get-Volume -Pool default).Name | Should -Be @("base.$BaseFormat")
        Assert-SameView (Join-Path $images "base.$BaseFormat") $before
        if ($BaseFormat -eq 'qcow2') { Assert-QemuCheckClean (Join-Path $images 'base.qcow2') }
    }

    It 'empties every layer above -Base, bottom up, keeping the overlay view' {
        $root = New-ChainHost 'qcow2' 3
        $images = Join-Path $root 'var/lib/libvirt/images'
        $before = Save-View (Join-Path $images 'layer3.qcow2') 'before'
        Merge-Volume -Volume (Get-Volume -Pool default -Name layer3.qcow2) -Base (Join-Path $images 'base.qcow2')
        foreach ($f in 'layer3', 'layer2', 'layer1', 'base') {
            Assert-SameView (Join-Path $images "$f.qcow2") $before
            Assert-QemuCheckClean (Join-Path $images "$f.qcow2")
        }
    }

    It 'refuses <Case> and changes nothing' -ForEach @(
        @{ Case = 'an image without backing file'; Id = 'VolumeHasNoBackingFile'; Prepare = { param($root) }; Params = @{ Volume = 'base.qcow2' } }
        @{ Case = 'a -Base outside the chain'; Id = 'BaseNotInBackingChain'; Prepare = { param($root) qemu-img create -q -f qcow2 (Join-Path $root 'var/lib/libvirt/images/other.qcow2') 8M }; Params = @{ Base = 'other.qcow2' } }
        @{ Case = 'a base other clones share'; Id = 'BackingFileShared'; Prepare = { param($root) qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 (Join-Path $root 'var/lib/libvirt/images/clone2.qcow2') 8M }; Params = @{} }
        @{ Case = 'removing an overlay another image is built on'; Id = 'VolumeIsBackingFile'; Prepare = { param($root) qemu-img create -q -f qcow2 -b layer1.qcow2 -F qcow2 (Join-Path $root 'var/lib/libvirt/images/child.qcow2') 8M }; Params = @{ RemoveOverlay = $true } }
        @{ Case = 'an overlay a running VM uses'; Id = 'VolumeInUseByRunningVM'; Prepare = { param($root) New-VMDefinition $root; Get-Volume default layer1.qcow2 | Add-VMDisk -VMName kvm1 | Out-Null; Set-VMRunning $root }; Params = @{} }
        @{ Case = 'removing an overlay a stopped VM uses'; Id = 'VolumeAttachedToVM'; Prepare = { param($root) New-VMDefinition $root; Get-Volume default layer1.qcow2 | Add-VMDisk -VMName kvm1 | Out-Null }; Params = @{ RemoveOverlay = $true } }
        @{ Case = 'a read-only base'; Id = 'MergeImageNotWritable'; Prepare = { param($root) chmod 0444 (Join-Path $root 'var/lib/libvirt/images/base.qcow2') }; Params = @{} }
    ) {
        $root = New-ChainHost 'qcow2' 1
        $images = Join-Path $root 'var/lib/libvirt/images'
        & $Prepare $root
        $p = @{ Volume = Join-Path $images 'layer1.qcow2' }
        foreach ($k in $Params.Keys) { $p[$k] = if ($k -in 'Volume', 'Base') { Join-Path $images $Params[$k] } else { $Params[$k] } }
        $before = Get-TreeSnapshot $root
        { Merge-Volume @p -ErrorAction Stop } | Should -Throw -ErrorId "$Id,$errorSuffix"
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'merges a shared base with -Force, changing what the other clone reads' {
        $root = New-ChainHost 'qcow2' 1
        $images = Join-Path $root 'var/lib/libvirt/images'
        qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 (Join-Path $images 'clone2.qcow2') 8M
        $before = Save-View (Join-Path $images 'layer1.qcow2') 'before'
        Merge-Volume -Volume (Join-Path $images 'layer1.qcow2') -Force
        Assert-SameView (Join-Path $images 'clone2.qcow2') $before
        Assert-SameView (Join-Path $images 'layer1.qcow2') $before
    }

    It 'merges an overlay a stopped VM uses: the VM reads the base through it and sees no change' {
        $root = New-ChainHost 'qcow2' 1
        $images = Join-Path $root 'var/lib/libvirt/images'
        New-VMDefinition $root
        Get-Volume default layer1.qcow2 | Add-VMDisk -VMName kvm1 | Out-Null
        $before = Save-View (Join-Path $images 'layer1.qcow2') 'before'
        Merge-Volume -Volume (Get-Volume default layer1.qcow2)
        Assert-SameView (Join-Path $images 'layer1.qcow2') $before
        Assert-SameView (Join-Path $images 'base.qcow2') $before
    }

    It 'changes nothing with -WhatIf' {
        $root = New-ChainHost 'raw' 1
        $before = Get-TreeSnapshot $root
        Get-Volume -Pool default -Name layer1.qcow2 | Merge-Volume -RemoveOverlay -WhatIf
        Get-TreeSnapshot $root | Should -Be $before
    }

    It 'goes on with the next piped volume after a failed one' {
        $root = New-ChainHost 'qcow2' 1
        $merged = @(Get-Volume -Pool default -Name base.qcow2, layer1.qcow2 | Merge-Volume -PassThru -ErrorVariable failures -ErrorAction SilentlyContinue)
        $failures | Should -HaveCount 1
        $failures[0].FullyQualifiedErrorId | Should -BeLike 'VolumeHasNoBackingFile,*'
        $merged.Name | Should -Be @('base.qcow2')
    }

    It 'stops on Ctrl+C (StopProcessing) with both images valid and the overlay view unchanged' {
        $root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $images = Join-Path $root 'var/lib/libvirt/images'
        qemu-img create -q -f qcow2 (Join-Path $images 'base.qcow2') 256M
        qemu-img create -q -f qcow2 -o cluster_size=16k -b base.qcow2 -F qcow2 (Join-Path $images 'top.qcow2') 256M
        $null = qemu-io -c 'write -P 0x5c 0 192M' (Join-Path $images 'top.qcow2')
        $before = Save-View (Join-Path $images 'top.qcow2') 'before'
        $baseLength = (Get-Item (Join-Path $images 'base.qcow2')).Length
        $ps = [powershell]::Create()
        try {
            $null = $ps.AddScript("Import-Module '$env:KVMSTORAGE_TEST_MODULE'; `$env:KVMSTORAGE_ROOT = '$root'; Merge-Volume -Volume (Get-Volume -Pool default -Name top.qcow2)")
            $async = $ps.BeginInvoke()
            $deadline = [DateTime]::UtcNow.AddSeconds(60)
            # The merge is under way once the base grows.
            while ((Get-Item (Join-Path $images 'base.qcow2')).Length -eq $baseLength -and -not $async.IsCompleted -and [DateTime]::UtcNow -lt $deadline) { Start-Sleep -Milliseconds 10 }
            $ps.Stop()
            try { $null = $ps.EndInvoke($async) } catch { $_.Exception.InnerException.GetType().Name | Should -Be 'PipelineStoppedException' }
            $ps.InvocationStateInfo.State | Should -Be 'Stopped'
        }
        finally { $ps.Dispose() }
        Assert-QemuCheckClean (Join-Path $images 'top.qcow2')
        Assert-QemuCheckClean (Join-Path $images 'base.qcow2')
        Assert-SameView (Join-Path $images 'top.qcow2') $before
    }
}
