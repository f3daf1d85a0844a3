#Requires -Version 7.4
# Commands that write a qcow2 image first check it as qemu would: an image whose own metadata is damaged (a snapshot
# whose L1 table is the active one, a cluster used twice) is refused with the checker's finding, byte for byte
# unchanged, and qemu-img check agrees that it is damaged. Test-Volume -Repair is the way out.

BeforeAll {
    Import-Module $env:KVMSTORAGE_TEST_MODULE -Force
    Import-Module (Join-Path $PSScriptRoot 'TestHelpers.psm1') -Force
    $script:hasQemu = [bool](Get-Command qemu-img -ErrorAction SilentlyContinue) -and [bool](Get-Command qemu-io -ErrorAction SilentlyContinue)

    function New-Damaged([string] $Kind) {
        $file = Join-Path $images "$Kind.qcow2"
        qemu-img create -q -f qcow2 $file 4M
        qemu-io -c 'write -q -P 0x11 0 128k' $file | Out-Null
        $l1 = [long](Read-BE $file 40 8)
        switch ($Kind) {
            'snapshot-shares-active-l1' {
                qemu-img snapshot -c s1 $file
                # The snapshot table's first entry starts with its L1 table offset: point it at the active L1.
                Write-BE $file ([long](Read-BE $file 64 8)) ([ulong]$l1)
            }
            { $_ -in 'guest-cluster-on-l1', 'guest-cluster-on-refcount-table' } {
                # The first guest cluster's L2 entry points at the image's own L1 table or refcount table: a write of
                # guest data there (a merge into this base) would overwrite metadata.
                $target = if ($Kind -eq 'guest-cluster-on-l1') { $l1 } else { [long](Read-BE $file 48 8) }
                $l2 = [long]((Read-BE $file $l1 8) -band 0x00fffffffffffe00)
                Write-BE $file $l2 (([ulong](Read-BE $file $l2 8) -band 0x8000000000000000) -bor [ulong]$target)
            }
            'cluster-used-twice' {
                qemu-img snapshot -c s1 $file
                qemu-img snapshot -d s1 $file
                # The second guest cluster's L2 entry is made to point at the first one's data cluster.
                $l2 = [long]((Read-BE $file $l1 8) -band 0x00fffffffffffe00)
                Write-BE $file ($l2 + 8) (Read-BE $file $l2 8)
            }
        }
        $file
    }
}

Describe 'Writes into damaged qcow2 images' -Tag Oracle {
    BeforeAll {
        $script:root = New-TestHostRoot
        New-StoragePool -Name default -Path /var/lib/libvirt/images -Build | Out-Null
        $script:images = Join-Path $root 'var/lib/libvirt/images'
    }

    It '<Cmd> refuses an image where <Kind>, unchanged, as qemu-img check finds it damaged' -ForEach @(
        @{ Kind = 'snapshot-shares-active-l1'; Cmd = 'Remove-VolumeSnapshot'; Action = { param($v) Remove-VolumeSnapshot -Volume $v -Name s1 -Confirm:$false } }
        @{ Kind = 'snapshot-shares-active-l1'; Cmd = 'Restore-VolumeSnapshot'; Action = { param($v) Restore-VolumeSnapshot -Volume $v -Name s1 -Confirm:$false } }
        @{ Kind = 'snapshot-shares-active-l1'; Cmd = 'New-VolumeSnapshot'; Action = { param($v) New-VolumeSnapshot -Volume $v -Name s2 } }
        @{ Kind = 'cluster-used-twice'; Cmd = 'New-VolumeSnapshot'; Action = { param($v) New-VolumeSnapshot -Volume $v -Name s2 } }
        @{ Kind = 'cluster-used-twice'; Cmd = 'Set-Volume'; Action = { param($v) Set-Volume -Volume $v -BackingVolume $null -Confirm:$false } }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $file = New-Damaged $Kind
        try {
            & qemu-img check -q $file *> $null
            $LASTEXITCODE | Should -Be 2 -Because 'qemu-img check reports the crafted image as corrupt'
            $hash = (Get-FileHash -LiteralPath $file).Hash
            { & $Action "/var/lib/libvirt/images/$Kind.qcow2" -ErrorAction Stop } | Should -Throw -ErrorId 'ImageCheckFailed,*'
            (Get-FileHash -LiteralPath $file).Hash | Should -Be $hash
        }
        finally { Remove-Item -LiteralPath $file -Force }
    }

    It 'Merge-Volume refuses a base where <Kind>, unchanged, as qemu-img commit does' -ForEach @(
        @{ Kind = 'guest-cluster-on-l1' }, @{ Kind = 'guest-cluster-on-refcount-table' }
    ) {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $base = New-Damaged $Kind
        $overlay = Join-Path $images "over-$Kind.qcow2"
        try {
            qemu-img create -q -f qcow2 -b $base -F qcow2 $overlay
            qemu-io -c 'write -q -P 0x22 0 64k' $overlay | Out-Null
            qemu-img rebase -u -b "/var/lib/libvirt/images/$Kind.qcow2" -F qcow2 $overlay
            $hashes = (Get-FileHash -LiteralPath $base).Hash, (Get-FileHash -LiteralPath $overlay).Hash
            { Merge-Volume -Volume "/var/lib/libvirt/images/over-$Kind.qcow2" -Force -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'ImageCheckFailed,*'
            (Get-FileHash -LiteralPath $base).Hash, (Get-FileHash -LiteralPath $overlay).Hash | Should -Be $hashes

            # The oracle on copies: qemu-img commit refuses too (it marks the base corrupt: "Preventing invalid write on metadata").
            $copyBase = Join-Path $TestDrive "oracle-$Kind.qcow2"
            $copyOver = Join-Path $TestDrive "oracle-over-$Kind.qcow2"
            Copy-Item -LiteralPath $base $copyBase
            qemu-img create -q -f qcow2 -b $copyBase -F qcow2 $copyOver
            qemu-io -c 'write -q -P 0x22 0 64k' $copyOver | Out-Null
            & qemu-img commit -q $copyOver *> $null
            $LASTEXITCODE | Should -Not -Be 0
        }
        finally { Remove-Item -LiteralPath $base, $overlay -Force -ErrorAction SilentlyContinue }
    }

    It 'names the finding and the way out' {
        if (-not $hasQemu) { Set-ItResult -Skipped -Because 'qemu-img/qemu-io are not installed'; return }
        $file = New-Damaged 'cluster-used-twice'
        try {
            try { New-VolumeSnapshot -Volume /var/lib/libvirt/images/cluster-used-twice.qcow2 -Name s2 -ErrorAction Stop } catch { $e = $_ }
            "$e" | Should -Match 'Test-Volume -Repair All'
            "$e" | Should -Match 'error'
        }
        finally { Remove-Item -LiteralPath $file -Force }
    }
}
