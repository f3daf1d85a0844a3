#Requires -Version 7.4
<#
.SYNOPSIS
    Makes the seed corpora of the block-reader fuzz targets (fuzz/corpus/<format>-blocks/) with qemu-img and qemu-io.
.DESCRIPTION
    Small images with data written (several clusters or grains, zeros, compressed clusters where the format has
    them), cut the way FuzzTargets.ReadBlocks puts inputs back together: the first 200 KiB of every 1 MiB of the
    file, so a vhdx (regions 1 MiB aligned) or a vdi or vhd with a data block stays under AFL's 1 MiB input limit.
    Trailing zeros are dropped in whole 64 KiB units (the target pads with holes). Run again only to change the seeds.
.EXAMPLE
    dotnet pwsh fuzz/New-BlockCorpus.ps1
#>
param([string] $Corpus = (Join-Path $PSScriptRoot 'corpus'))
$ErrorActionPreference = 'Stop'
$PSNativeCommandUseErrorActionPreference = $true
$chunk = 200KB
$stride = 1MB
$work = Join-Path ([IO.Path]::GetTempPath()) ("kvmstorage-blockcorpus-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
New-Item -ItemType Directory -Path $work | Out-Null

function Write-Seed([string] $Image, [string] $Target, [string] $Name) {
    $bytes = [IO.File]::ReadAllBytes($Image)
    $out = [Collections.Generic.List[byte]]::new()
    for ($offset = 0; $offset -lt $bytes.Length; $offset += $stride) {
        $n = [Math]::Min($chunk, $bytes.Length - $offset)
        # Every chunk but the last is whole: the target puts chunk k at k MiB, and the file ends where the last one does.
        $piece = [byte[]]::new($(if ($offset + $stride -lt $bytes.Length) { $chunk } else { $n }))
        [Array]::Copy($bytes, $offset, $piece, 0, $n)
        $out.AddRange($piece)
    }
    $last = $out.Count - 1
    while ($last -ge 0 -and $out[$last] -eq 0) { $last-- }
    $folder = Join-Path $Corpus $Target
    New-Item -ItemType Directory -Force $folder | Out-Null
    # Whole 64 KiB units are kept: a table cut short at the end would be refused before anything is read.
    $keep = [Math]::Min($out.Count, [Math]::Ceiling(($last + 1) / 64KB) * 64KB)
    [IO.File]::WriteAllBytes((Join-Path $folder $Name), $out.GetRange(0, $keep).ToArray())
}

function Compress-VhdxLayout([string] $Path) {
    <# qemu-img puts a vhdx's data blocks from 8 MiB on; move them down to 4 MiB (BAT entries renumbered; the BAT
       has no checksum), so the seed's cut stays under 1 MiB. BAT region: the region table entry whose GUID is
       2DC27766-F623-4200-9D64-115E9BFD4A08. #>
    $bytes = [IO.File]::ReadAllBytes($Path)
    $batGuid = [guid]'2DC27766-F623-4200-9D64-115E9BFD4A08'
    $count = [BitConverter]::ToUInt32($bytes, 192KB + 8)
    $bat = $null
    for ($i = 0; $i -lt $count; $i++) {
        $e = 192KB + 16 + (32 * $i)
        if ([guid]::new([byte[]]$bytes[$e..($e + 15)]) -eq $batGuid) { $bat = [BitConverter]::ToUInt64($bytes, $e + 16); $batLength = [BitConverter]::ToUInt32($bytes, $e + 24) }
    }
    if ($null -eq $bat) { throw "$Path has no BAT region" }
    $out = [byte[]]::new(8MB)
    [Array]::Copy($bytes, $out, 4MB)
    $top = 4MB
    for ($i = 0; $i -lt $batLength / 8; $i++) {
        $at = [int]$bat + (8 * $i)
        $entry = [BitConverter]::ToUInt64($bytes, $at)
        $mb = $entry -shr 20
        if ($mb -ge 8) {
            $new = $mb - 4
            [Array]::Copy($bytes, [long]$mb * 1MB, $out, [long]$new * 1MB, 1MB)
            [BitConverter]::GetBytes([uint64](($entry -band 0xFFFFF) -bor ([uint64]$new -shl 20))).CopyTo($out, $at)
            $top = [Math]::Max($top, ($new + 1) * 1MB)
        }
    }
    [IO.File]::WriteAllBytes($Path, $out[0..($top - 1)])
}

function New-Image([string] $Format, [string] $Name, [string] $Size, [string[]] $Options, [string[]] $Writes) {
    $file = Join-Path $work $Name
    $o = if ($Options) { @('-o', ($Options -join ',')) } else { @() }
    & qemu-img create -q -f $Format @o $file $Size
    if ($Writes) { $null = & qemu-io -f $Format @($Writes | ForEach-Object { '-c', $_ }) $file }
    $file
}

try {
    $writes = 'write -P 0x11 0 64k', 'write -P 0x22 1M 8k', 'write -z 2M 64k', 'write -P 0x33 3M 4k'
    # qcow2: 4 KiB clusters (many L2 entries), v2 and v3, compressed clusters, zero clusters, a snapshot.
    Write-Seed (New-Image qcow2 a.qcow2 4M 'cluster_size=4096' $writes) qcow2-blocks a.qcow2
    Write-Seed (New-Image qcow2 b.qcow2 4M 'cluster_size=512,compat=0.10' 'write -P 0x44 0 16k', 'write -P 0x55 2M 4k') qcow2-blocks b.qcow2
    $raw = New-Image raw src.raw 4M $null 'write -P 0x66 0 128k', 'write -P 0x77 3M 64k'
    & qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 $raw (Join-Path $work c.qcow2)
    Write-Seed (Join-Path $work c.qcow2) qcow2-blocks c.qcow2
    $d = New-Image qcow2 d.qcow2 4M 'cluster_size=4096' 'write -P 0x11 0 32k'
    & qemu-img snapshot -c s1 $d
    $null = & qemu-io -c 'write -P 0x12 0 8k' -c 'write -P 0x13 1M 4k' $d
    Write-Seed $d qcow2-blocks d.qcow2
    & qemu-img convert -q -f raw -O qcow2 -o cluster_size=16384,extended_l2=on $raw (Join-Path $work e.qcow2)
    Write-Seed (Join-Path $work e.qcow2) qcow2-blocks e.qcow2

    # vmdk: monolithicSparse (grain directory and tables), streamOptimized (compressed grains).
    Write-Seed (New-Image vmdk a.vmdk 4M $null $writes) vmdk-blocks a.vmdk
    & qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized $raw (Join-Path $work b.vmdk)
    Write-Seed (Join-Path $work b.vmdk) vmdk-blocks b.vmdk

    # vdi: dynamic (block map, 1 MiB blocks) and static.
    Write-Seed (New-Image vdi a.vdi 4M $null 'write -P 0x11 0 64k', 'write -P 0x22 2M 8k') vdi-blocks a.vdi
    Write-Seed (New-Image vdi b.vdi 2M 'static=on' 'write -P 0x33 0 8k') vdi-blocks b.vdi

    # vhd: dynamic (BAT, 2 MiB blocks with sector bitmaps) and fixed.
    Write-Seed (New-Image vpc a.vhd 2M 'subformat=dynamic' 'write -P 0x11 0 64k', 'write -P 0x22 1M 8k') vhd-blocks a.vhd
    Write-Seed (New-Image vpc b.vhd 1M 'subformat=fixed' 'write -P 0x33 0 8k') vhd-blocks b.vhd

    # vhdx: dynamic with 1 MiB blocks (regions, metadata, BAT), and one with a partly written block.
    foreach ($v in @(@{ Name = 'a.vhdx'; Size = '4M'; Write = 'write -P 0x11 0 64k' }, @{ Name = 'b.vhdx'; Size = '8M'; Write = 'write -P 0x33 3M 4k' })) {
        $file = New-Image vhdx $v.Name $v.Size 'block_size=1M,log_size=1M' $v.Write
        Compress-VhdxLayout $file
        & qemu-img check -q -f vhdx $file
        Write-Seed $file vhdx-blocks $v.Name
    }
}
finally { Remove-Item -Recurse -Force $work }
Get-ChildItem (Join-Path $Corpus '*-blocks') -File | Select-Object @{ n = 'Seed'; e = { "$($_.Directory.Name)/$($_.Name)" } }, Length | Format-Table -AutoSize | Out-Host
