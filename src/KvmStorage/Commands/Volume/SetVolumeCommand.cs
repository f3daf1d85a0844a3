using System.Management.Automation;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Set-Volume: changes a qcow2 volume in place. Its backing file (<c>qemu-img rebase</c>): onto another image with the
/// guest view kept, onto a moved copy of the same image with -Unsafe, or to none ($null) to make it standalone. Its
/// format options (<c>qemu-img amend</c>): -Compat, -LazyRefcounts, -RefcountBits. Both can be given; the options
/// change first.
/// </summary>
[Cmdlet(VerbsCommon.Set, "Volume", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(StorageVolume))]
public sealed class SetVolumeCommand : VolumeFirstCmdlet
{
    /// <summary>The new backing image: a volume object or a path; $null (or '') makes the volume standalone.</summary>
    [Parameter]
    [AllowNull]
    [Alias("BackingPath")]
    public VolumeReference? BackingVolume { get; set; }

    /// <summary>Format of the new backing image; detected from its content when omitted, and recorded in the header.</summary>
    [Parameter]
    [ValidateSet("qcow2", "raw", "vmdk", "qcow", "vdi", "vpc", "vhdx")]
    public string? BackingFormat { get; set; }

    /// <summary>Record the backing path relative to the volume's folder instead of absolute.</summary>
    [Parameter]
    public SwitchParameter RelativeBackingPath { get; set; }

    /// <summary>Only rewrite the header, copying no data: for a backing file that was moved or renamed unchanged.</summary>
    [Parameter]
    public SwitchParameter Unsafe { get; set; }

    /// <summary>
    /// qcow2 compatibility: 1.1 (version 3) or 0.10 (version 2, for old QEMU). Going down, zero clusters become what
    /// version 2 can say (unallocated, or zeros over a backing file); refused for what version 2 cannot hold.
    /// </summary>
    [Parameter]
    [ValidateSet("1.1", "0.10")]
    public string? Compat { get; set; }

    /// <summary>qcow2 lazy refcounts on (-LazyRefcounts) or off (-LazyRefcounts:$false); compat 1.1 only.</summary>
    [Parameter]
    public SwitchParameter LazyRefcounts { get; set; }

    /// <summary>qcow2 refcount width in bits: 1, 2, 4, 8, 16, 32 or 64 (compat 1.1; 0.10 takes 16 only). Narrower widths must hold every refcount.</summary>
    [Parameter]
    [ValidateSet("1", "2", "4", "8", "16", "32", "64")]
    public string? RefcountBits { get; set; }

    /// <summary>Emit the changed volume.</summary>
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord() => ForEachVolume(volume =>
    {
        bool rebase = MyInvocation.BoundParameters.ContainsKey(nameof(BackingVolume));
        bool amend = Compat is not null || RefcountBits is not null || MyInvocation.BoundParameters.ContainsKey(nameof(LazyRefcounts));
        if (!rebase && !amend)
        {
            throw new KvmStorageException(
                ErrorKind.InvalidArgument,
                VolumeErrorIds.NothingToChange,
                "Set-Volume needs something to change: -BackingVolume (a rebase), or -Compat, -LazyRefcounts or -RefcountBits (the format options).",
                volume.ToString());
        }

        // Every refusal of both changes is made before the first question is asked.
        VolumeAction<StorageVolume>? options = amend
            ? Volumes.Amend(volume, new ImageAmendOptions
            {
                Compat = Compat,
                LazyRefcounts = MyInvocation.BoundParameters.ContainsKey(nameof(LazyRefcounts)) ? LazyRefcounts.IsPresent : null,
                RefcountBits = RefcountBits is null ? null : int.Parse(RefcountBits, System.Globalization.CultureInfo.InvariantCulture),
            })
            : null;
        VolumeAction<StorageVolume>? backing = null;
        if (rebase)
        {
            VolumeSpec? target = BackingVolume is null || BackingVolume.Path.Length == 0 ? null : SpecOf(BackingVolume);
            ImageFormat? format = BackingFormat is not null && ImageFormats.TryParse(BackingFormat, out ImageFormat parsed) ? parsed : null;
            backing = Volumes.Rebase(volume, target, format, RelativeBackingPath, Unsafe);
        }

        StorageVolume? changed = null;
        if (options is not null && ShouldProcess(options.Target, options.Description))
        {
            changed = RunWithProgress("Set-Volume", $"Amending {System.IO.Path.GetFileName(options.Target)}", options.Run);
        }

        if (backing is not null && ShouldProcess(backing.Target, backing.Description))
        {
            changed = RunWithProgress("Set-Volume", $"Rebasing {System.IO.Path.GetFileName(backing.Target)}", backing.Run);
        }

        if (PassThru && changed is not null)
        {
            WriteObject(changed);
        }
    });
}
