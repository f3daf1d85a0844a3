using System.Management.Automation;
using KvmStorage.Core.Domains;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>Add-VMDisk: attaches an image to a VM's definition as its next free disk (or the target given).</summary>
[Cmdlet(VerbsCommon.Add, "VMDisk", SupportsShouldProcess = true, DefaultParameterSetName = ByVolume)]
[OutputType(typeof(Core.Domains.VMDisk))]
public sealed class AddVMDiskCommand : KvmCmdlet
{
    private const string ByVolume = "ByVolume";
    private const string ByPath = "ByPath";
    private const string ByPoolVolume = "ByPoolVolume";
    private const string NoMediaSet = "NoMedia";

    /// <summary>The VM (libvirt domain) to attach to.</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The image as New-Volume or Get-Volume emit it (or a file from Get-ChildItem).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByVolume, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>Path of an image file or block device (an .iso for a cdrom).</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPath)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = string.Empty;

    /// <summary>The pool holding the image, with -Name.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPoolVolume)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>The volume name in -Pool.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByPoolVolume)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VolumeNameCompleter))]
    public string Name { get; set; } = string.Empty;

    /// <summary>Adds an empty cdrom or floppy drive.</summary>
    [Parameter(Mandatory = true, ParameterSetName = NoMediaSet)]
    public SwitchParameter NoMedia { get; set; }

    /// <summary>Target name such as vdb; when omitted, the lowest free name for the bus (vd* virtio, sd* scsi/sata/usb, hd* ide, fd* fdc) whose drive address no other disk holds. A name whose address another disk holds is refused (DriveAddressInUse).</summary>
    [Parameter]
    [ValidatePattern("^(vd|sd|hd|xvd|ubd|fd)[a-z]+$")]
    public string? Target { get; set; }

    /// <summary>virtio (default for disks), scsi, sata (default for cdroms), ide or usb.</summary>
    [Parameter]
    [ValidateSet("virtio", "scsi", "sata", "ide", "usb", "fdc")]
    public string? Bus { get; set; }

    /// <summary>disk (default), cdrom, floppy or lun.</summary>
    [Parameter]
    [ValidateSet("disk", "cdrom", "floppy", "lun")]
    public string Device { get; set; } = "disk";

    /// <summary>Host cache mode: default, none, writethrough, writeback, directsync or unsafe.</summary>
    [Parameter]
    [ValidateSet("default", "none", "writethrough", "writeback", "directsync", "unsafe")]
    public string? Cache { get; set; }

    /// <summary>I/O mode: threads, native (needs cache none or directsync) or io_uring.</summary>
    [Parameter]
    [ValidateSet("threads", "native", "io_uring")]
    public string? Io { get; set; }

    /// <summary>Pass guest discards (TRIM) to the image: unmap, or ignore.</summary>
    [Parameter]
    [ValidateSet("unmap", "ignore")]
    public string? Discard { get; set; }

    /// <summary>Attach read-only (cdroms always are).</summary>
    [Parameter]
    public SwitchParameter ReadOnly { get; set; }

    /// <summary>Mark the disk shareable between VMs (raw images, or read-only qcow2).</summary>
    [Parameter]
    public SwitchParameter Shareable { get; set; }

    /// <summary>Serial number the guest sees.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Serial { get; set; }

    /// <summary>Per-device boot order (1 boots first); refused when the domain uses &lt;os&gt;&lt;boot dev=…&gt;.</summary>
    [Parameter]
    [ValidateRange(1, 10000)]
    public int BootOrder { get; set; }

    /// <summary>Refer to the image as &lt;source pool= volume=&gt; instead of by path.</summary>
    [Parameter]
    public SwitchParameter AsVolumeSource { get; set; }

    /// <summary>
    /// The libvirt secret (New-VolumeSecret) of an encrypted volume; by default the one defined for the volume's path.
    /// The disk then carries &lt;encryption format='luks'&gt; with it, so the VM can open the volume.
    /// </summary>
    [Parameter]
    public Guid? SecretUuid { get; set; }

    /// <summary>Attach even if the image is already attached to this VM, read-write to another, or a regular file outside every pool.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    /// <summary>Change the running VM (hot-plug); with -Config too, both. Needs a libvirt connection and a running VM.</summary>
    [Parameter]
    public SwitchParameter Live { get; set; }

    /// <summary>Change the persistent definition only (a running VM sees it at its next start).</summary>
    [Parameter]
    public SwitchParameter Config { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(VMName, () =>
        {
            string? localPath = ParameterSetName switch
            {
                ByVolume => Volumes.Locator.File(SpecOf(Volume)),
                ByPath => Volumes.Locator.File(SpecOfPath(Path)),
                _ => null,
            };
            var request = new DiskAttachRequest
            {
                VMName = VMName,
                LocalImagePath = localPath,
                Pool = ParameterSetName == ByPoolVolume ? Pool.Name : null,
                VolumeName = ParameterSetName == ByPoolVolume ? Name : null,
                AsVolumeSource = AsVolumeSource,
                SecretUuid = SecretUuid,
                Target = Target,
                Bus = Bus,
                Device = Device,
                Settings = new DiskSettings
                {
                    Cache = Cache,
                    Io = Io,
                    Discard = Discard,
                    ReadOnly = ReadOnly.IsPresent ? true : null,
                    Shareable = Shareable.IsPresent ? true : null,
                    Serial = Serial,
                    BootOrder = MyInvocation.BoundParameters.ContainsKey(nameof(BootOrder)) ? BootOrder : null,
                },
                Force = Force,
                Scope = DeviceScopes.From(Live, Config),
            };
            KvmHost.GetDomain(VMName);
            string what = localPath ?? (request.Pool is null ? "an empty " + Device + " drive" : $"{request.Pool}/{request.VolumeName}");
            if (ShouldProcess($"VM {VMName}", $"Attach {what} as a {Device}" + (Target is null ? " on the next free target" : " as " + Target)))
            {
                Core.Domains.VMDisk disk = new DiskAttachments(KvmHost).Attach(request);
                WarnIfActive(VMName, request.Scope);
                WriteObject(disk);
            }
        });
    }
}
